// Command cronguard is the command-line client of cronguard's admin API
// (package github.com/cronguard/cronguard/admin): list jobs, read a job's
// history, run a job now, switch it off or on, and watch the jobs live.
//
//	go install github.com/cronguard/cronguard/cmd/cronguard@latest
//	export CRONGUARD_URL=http://127.0.0.1:8080 CRONGUARD_TOKEN=...
//	cronguard jobs
//	cronguard history confirmation-emails --limit 50
//	cronguard run confirmation-emails --items users.json   # or --items - for stdin
//	cronguard disable confirmation-emails --reason "wrong template"
//	cronguard enable confirmation-emails
//	cronguard watch --interval 2s
//
// Tables are for people; --json prints the API's JSON for scripts (an API
// error too, as {"error": ..., "code": ...}; watch prints one line per
// refresh). Exit codes: 0 ok; 1 the operation failed (the API refused it or
// could not be reached, or a run failed or did not start); 2 usage (a bad
// command line, no URL or token, an unreadable --items file).
//
// The CLI lives in a module of its own so that the CLI library stays out of
// the core module's dependencies; it talks to the API only over HTTP.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], env{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Getenv: os.Getenv})
	stop()
	os.Exit(code)
}
