// Package examples is the module of cronguard's runnable examples. It is a
// module of its own so that their dependencies (SQLite, for one) stay out of
// the core's go.mod; the go.work at the repository root joins the two.
//
//	go run ./examples/quickstart    # from the repository root
//
// See each directory's doc comment for what it shows.
package examples
