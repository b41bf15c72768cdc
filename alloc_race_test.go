//go:build race

package cronguard

// raceEnabled: the race detector allocates on its own, so the allocation
// budgets are checked without it.
const raceEnabled = true
