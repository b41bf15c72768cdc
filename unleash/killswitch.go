// Package unleash is a cronguard kill switch on Unleash feature toggles.
//
// It is a module of its own, github.com/cronguard/cronguard/unleash, so
// that a program that imports cronguard without Unleash does not link the
// Unleash client and what it drags along (its module ships a non-test mock
// that imports testify, objx and a YAML library).
//
//	import (
//		unleashclient "github.com/Unleash/unleash-client-go/v4"
//		"github.com/cronguard/cronguard"
//		"github.com/cronguard/cronguard/unleash"
//	)
//
//	ks := unleash.NewUnleashKillSwitch(client)
//	s, err := cronguard.New(cronguard.WithKillSwitch(ks), ...)
package unleash

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	unleashclient "github.com/Unleash/unleash-client-go/v4"
	"github.com/cronguard/cronguard"
)

// DefaultUnleashPrefix is the default prefix of the Unleash toggle names of
// jobs: job "emails" is toggle "cronguard.emails". A prefix keeps the jobs'
// toggles apart from the product's feature toggles in the same project, and
// together in Unleash's search.
const DefaultUnleashPrefix = "cronguard."

// UnleashKillSwitch is a read-only kill switch on Unleash feature toggles:
// a job runs while its toggle is enabled for the client. Toggles are flipped
// in Unleash (UI or Admin API), never from cronguard: SetEnabled always
// fails with an error wrapping cronguard.ErrNotFlippable that names the
// toggle, so cronguard's Scheduler.SetEnabled says where to flip it, and the runaway
// guard cannot switch such a job off by itself (it stops the run; the next
// tick runs again unless the toggle is turned off in Unleash).
//
// # Toggle names and Unleash's rules
//
// The toggle of a flag is the prefix (DefaultUnleashPrefix unless
// UnleashPrefix) followed by the flag name, which is the job name unless the
// job was registered with cronguard.Flag. Unleash's own rules apply: a toggle that does
// not exist, or is archived, is off, so a job does not run until its toggle
// is created and turned on in the client's environment; strategies and
// constraints are evaluated as for any toggle, with the client's static
// context. Give a kill switch toggle the standard strategy or a 100% rollout:
// a partial rollout makes the job run on some ticks and not on others. Toggle
// names are URL-friendly (letters, digits and - _ . ! ~ * ' ( ), at most 100
// characters): for a job whose name is not, Enabled fails and the job does
// not run; name its flag with cronguard.Flag.
//
// # Evaluation, propagation and the fail policy
//
// Enabled evaluates in the client's memory (IsEnabled): no network on the
// hot path. A flip reaches the instance at the client's next fetch, so the
// refresh interval bounds propagation. Unleash publishes a new revision of
// the toggles about once a second, so with a 1s refresh a flip is seen 0.4
// to 1.4s after it is made; the client default (15s) is slow for a kill
// switch.
//
// The client cannot tell a toggle that is off from one it has never
// fetched, so until the client holds toggles — fetched from the server, or
// read from its backup file at start — Enabled returns an error and the
// Scheduler's fail policy applies: the job does not run unless
// cronguard.WithFailOpen, and each such decision is a cronguard.EventFlag. (A project with no toggles at all
// looks the same as a client that has fetched nothing; every job's toggle
// is then missing, hence off, anyway.) After that, while the server cannot be
// reached the client keeps the toggles it last fetched, as Unleash clients
// do: the last known value holds.
//
// # Recommended client settings
//
//	client, err := unleashclient.NewClient(
//		unleashclient.WithUrl("https://unleash.example.com/api"),
//		unleashclient.WithAppName("billing-worker"),
//		unleashclient.WithCustomHeaders(http.Header{"Authorization": {token}}), // a backend token
//		unleashclient.WithRefreshInterval(time.Second),       // = how fast a flip reaches the jobs
//		unleashclient.WithBackupPath("/var/lib/billing/unleash"), // persistent: last known toggles survive a restart
//		unleashclient.WithHttpClient(&http.Client{Timeout: 5 * time.Second}),
//		unleashclient.WithListener(myListener),               // errors: an unreachable server is silent otherwise
//	)
//	defer client.Close() // after Scheduler.Stop
//	s, err := cronguard.New(cronguard.WithKillSwitch(unleash.NewUnleashKillSwitch(client)), ...)
//
// Never call client.WaitForReady before starting the Scheduler: it does not
// return while the server is unreachable. NewClient registers the client
// for metrics with a synchronous POST unless WithDisableMetrics(true); the
// HTTP client's timeout bounds it (http.DefaultClient has none). With
// metrics on, IsEnabled hands a count to the client's own goroutine, so
// Enabled must not be called after client.Close: close the client after the
// Scheduler has stopped. The backup file is a last known value too: a
// client started while the server is down answers from it; without one it
// answers nothing, and the fail policy applies.
type UnleashKillSwitch struct {
	client *unleashclient.Client
	prefix string
	ready  atomic.Bool // the client has held toggles once
}

// UnleashOption configures NewUnleashKillSwitch.
type UnleashOption func(*UnleashKillSwitch)

// UnleashPrefix sets the prefix of the jobs' toggle names (default
// DefaultUnleashPrefix, "cronguard."); "" makes the toggle name the flag
// name.
func UnleashPrefix(p string) UnleashOption {
	return func(u *UnleashKillSwitch) { u.prefix = p }
}

// NewUnleashKillSwitch returns a kill switch on the toggles of client. It
// does not wait for the client to fetch anything. The caller keeps the
// client and closes it after the Scheduler has stopped.
func NewUnleashKillSwitch(client *unleashclient.Client, opts ...UnleashOption) *UnleashKillSwitch {
	u := &UnleashKillSwitch{client: client, prefix: DefaultUnleashPrefix}
	for _, opt := range opts {
		if opt != nil {
			opt(u)
		}
	}
	return u
}

// Toggle returns the name of the Unleash toggle of flag.
func (u *UnleashKillSwitch) Toggle(flag string) string { return u.prefix + flag }

// errUnleashNotLoaded is Enabled's error until the client holds toggles.
var errUnleashNotLoaded = errors.New("unleash client holds no toggles yet (server not reached since start, no backup file)")

// Enabled implements cronguard.KillSwitch: whether the flag's toggle is
// enabled for the client, evaluated locally. It fails while the client has no toggles
// (see the type's documentation), for a toggle name Unleash would refuse,
// and with a nil client.
func (u *UnleashKillSwitch) Enabled(_ context.Context, flag string) (bool, error) {
	if u.client == nil {
		return false, errors.New("unleash kill switch: nil client")
	}
	name := u.Toggle(flag)
	if err := validToggleName(name); err != nil {
		return false, err
	}
	if !u.ready.Load() {
		if len(u.client.ListFeatures()) == 0 {
			return false, fmt.Errorf("unleash kill switch: toggle %q: %w", name, errUnleashNotLoaded)
		}
		u.ready.Store(true)
	}
	return u.client.IsEnabled(name), nil
}

// Flipped gives cronguard.JobInfo (and the dashboard) the flag's record:
// the reason names the toggle, where an operator flips it; who flipped it
// and when are in Unleash's event log, so by and at are empty.
func (u *UnleashKillSwitch) Flipped(flag string) (by, reason string, at time.Time) {
	return "", fmt.Sprintf("Unleash toggle %q", u.Toggle(flag)), time.Time{}
}

// SetEnabled implements cronguard.FlippableKillSwitch, only to say where
// the flag is flipped: it changes nothing and always returns an error
// wrapping cronguard.ErrNotFlippable that names the flag's toggle. The
// Scheduler passes that error on from Scheduler.SetEnabled, remembers
// nothing, and its runaway guard does not report it as a failure.
func (u *UnleashKillSwitch) SetEnabled(_ context.Context, flag string, _ bool, _ string) error {
	return fmt.Errorf("%w: flip toggle %q in Unleash (enabled in the client's environment: the job runs; disabled or missing: it does not)",
		cronguard.ErrNotFlippable, u.Toggle(flag))
}

// validToggleName checks name against Unleash's rule for toggle names:
// encodeURIComponent(name) == name, not "." or "..", 1 to 100 characters.
func validToggleName(name string) error {
	ok := len(name) >= 1 && len(name) <= 100 && name != "." && name != ".."
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '!' || c == '~' || c == '*' || c == '\'' || c == '(' || c == ')'
	}
	if !ok {
		return fmt.Errorf("unleash kill switch: %q is not a valid Unleash toggle name (URL-friendly characters only, at most 100): register the job with Flag(...)", name)
	}
	return nil
}
