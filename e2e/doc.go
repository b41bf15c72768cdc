// Package e2e holds cronguard's browser tests: the admin dashboard driven
// in a real headless chromium with chromedp. It is a module of its own so
// that chromedp stays out of the core's go.mod:
//
//	apt-get install -y chromium
//	go test -race ./e2e/...        # from the repository root (go.work)
//
// Screenshots go to $CRONGUARD_ARTIFACTS, or e2e/testdata/screenshots-out
// (ignored by git); the test logs each path. Without chromium the tests
// skip, loudly; under CI=true they fail.
package e2e
