package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"time"
)

// maxItems bounds an --items file.
const maxItems = 64 << 20

type jobsCmd struct{}

// Run lists the jobs.
func (jobsCmd) Run(a *app) error {
	var l jobList
	raw, err := a.api.get(a.ctx, "/api/jobs", nil, &l)
	if err != nil {
		return a.fail(err)
	}
	if a.json {
		return a.printRaw(raw)
	}
	return printJobs(a.env.Out, l.Jobs)
}

type historyCmd struct {
	Job   string `arg:"" help:"The job's name."`
	Limit int    `default:"20" help:"How many entries, 1 to 1000."`
}

// Run shows the job's history.
func (c historyCmd) Run(a *app) error {
	if c.Limit < 1 || c.Limit > 1000 {
		return &usageError{fmt.Sprintf("--limit %d: want 1 to 1000", c.Limit)}
	}
	var d jobDetail
	raw, err := a.api.get(a.ctx, jobPath(c.Job), url.Values{"limit": {strconv.Itoa(c.Limit)}}, &d)
	if err != nil {
		return a.fail(err)
	}
	if a.json {
		return a.printRaw(raw)
	}
	return printHistory(a.env.Out, d)
}

type runCmd struct {
	Job   string `arg:"" help:"The job's name."`
	Items string `help:"A JSON array of items to run (Batch jobs): a file, or - for standard input. Without it, one whole run." placeholder:"FILE|-"`
}

// Run runs the job now and shows its report; a run that failed or did not
// start exits 1.
func (c runCmd) Run(a *app) error {
	var body []byte
	if c.Items != "" {
		var err error
		if body, err = readItems(c.Items, a.env.In); err != nil {
			return &usageError{err.Error()}
		}
	}
	var r report
	raw, err := a.api.post(a.ctx, jobPath(c.Job, "run"), body, &r)
	if err != nil {
		return a.fail(err)
	}
	if a.json {
		err = a.printRaw(raw)
	} else {
		err = printReport(a.env.Out, r)
	}
	if err != nil {
		return err
	}
	if r.Error != "" || r.Skipped != "" {
		fmt.Fprintf(a.env.Err, "cronguard: run of %s ended %s: %s\n", safe(c.Job), safe(r.Stop), safe(r.Error))
		return errFailed
	}
	return nil
}

// readItems reads an --items file, or standard input for "-".
func readItems(name string, stdin io.Reader) ([]byte, error) {
	rd := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("--items: %w", err)
		}
		defer f.Close()
		rd = f
	}
	b, err := io.ReadAll(io.LimitReader(rd, maxItems+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("--items %s: %w", name, err)
	case len(b) > maxItems:
		return nil, fmt.Errorf("--items %s: more than %d bytes", name, maxItems)
	case len(bytes.TrimSpace(b)) == 0:
		return nil, fmt.Errorf("--items %s: empty; leave --items out for a whole run", name)
	}
	return b, nil
}

type disableCmd struct {
	Job    string `arg:"" help:"The job's name."`
	Reason string `required:"" help:"Why, for the other operators (recorded with your name and the time)."`
}

// Run switches the job off.
func (c disableCmd) Run(a *app) error { return a.flip(c.Job, "disable", c.Reason) }

type enableCmd struct {
	Job    string `arg:"" help:"The job's name."`
	Reason string `help:"Why (optional)."`
}

// Run switches the job on.
func (c enableCmd) Run(a *app) error { return a.flip(c.Job, "enable", c.Reason) }

func (a *app) flip(name, action, reason string) error {
	body, _ := json.Marshal(map[string]string{"reason": reason})
	var j job
	raw, err := a.api.post(a.ctx, jobPath(name, action), body, &j)
	if err != nil {
		return a.fail(err)
	}
	if a.json {
		return a.printRaw(raw)
	}
	_, err = fmt.Fprintf(a.env.Out, "%s: %s\n", safe(j.Name), switchText(j, 200))
	return err
}

type watchCmd struct {
	Interval time.Duration `default:"2s" help:"Time between refreshes (at least 100ms)."`
	Count    int           `help:"Stop after this many refreshes (0: until interrupted)."`
}

// Run shows the jobs table again every interval. It exits 0 when
// interrupted, 1 when the last refresh failed.
func (c watchCmd) Run(a *app) error {
	if c.Interval < 100*time.Millisecond || c.Count < 0 {
		return &usageError{fmt.Sprintf("--interval %s --count %d: want an interval of at least 100ms and a count >= 0", c.Interval, c.Count)}
	}
	tick := time.NewTicker(c.Interval)
	defer tick.Stop()
	var last error
	for i := 0; c.Count == 0 || i < c.Count; i++ {
		if i > 0 {
			select {
			case <-a.ctx.Done():
				return nil
			case <-tick.C:
			}
		}
		last = c.refresh(a)
		if a.ctx.Err() != nil {
			return nil // interrupted during the request
		}
	}
	if last != nil {
		return fmt.Errorf("the last refresh failed: %w", last)
	}
	return nil
}

// refresh shows the jobs once: a table under a clock line, or one JSON line.
func (c watchCmd) refresh(a *app) error {
	var l jobList
	raw, err := a.api.get(a.ctx, "/api/jobs", nil, &l)
	if a.json {
		if err != nil {
			raw, _ = json.Marshal(asAPIError(err))
		}
		var line bytes.Buffer
		if cerr := json.Compact(&line, raw); cerr != nil {
			return cerr
		}
		fmt.Fprintln(a.env.Out, line.String())
		return err
	}
	if isTerminal(a.env.Out) {
		fmt.Fprint(a.env.Out, "\x1b[H\x1b[2J") // home, clear screen
	}
	fmt.Fprintf(a.env.Out, "cronguard %s  %s  every %s, Ctrl-C to stop\n\n", a.api.base.Redacted(), time.Now().Format("15:04:05"), c.Interval)
	if err != nil {
		fmt.Fprintln(a.env.Out, "error:", safe(err.Error()))
		return err
	}
	return printJobs(a.env.Out, l.Jobs)
}

// fail reports an API error: as JSON on stdout too with --json.
func (a *app) fail(err error) error {
	if a.json {
		b, _ := json.MarshalIndent(asAPIError(err), "", "  ")
		fmt.Fprintln(a.env.Out, string(b))
	}
	return err
}

func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return &apiError{Msg: err.Error(), Code: "error"}
}

// printRaw prints the API's JSON as it came.
func (a *app) printRaw(raw []byte) error {
	_, err := a.env.Out.Write(append(bytes.TrimSpace(raw), '\n'))
	return err
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
