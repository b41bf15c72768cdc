package cronguard

import (
	"os"
	"strconv"
	"time"
)

// Defaults shared by the Scheduler (New) and every Redis backend
// (redis.go). Each is defined here only: a backend built by WithRedis gets
// the scheduler's value, one built by hand the same default.
const (
	// defaultKeyPrefix starts every Redis key (WithKeyPrefix).
	defaultKeyPrefix = "cronguard:"
	// defaultCallBudget bounds one call to a store (WithCallBudget).
	defaultCallBudget = 2 * time.Second
)

// defaultInstanceID names this process where no name is given
// (WithInstanceID): hostname-pid.
func defaultInstanceID() string {
	host, _ := os.Hostname()
	return host + "-" + strconv.Itoa(os.Getpid())
}
