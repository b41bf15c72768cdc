package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/alecthomas/kong"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // the operation failed
	exitUsage  = 2 // the command line is wrong
)

// env is what the program gets from the outside, so tests can give their own.
type env struct {
	In     io.Reader
	Out    io.Writer
	Err    io.Writer
	Getenv func(string) string
}

// cli is the command line.
type cli struct {
	URL     string        `help:"Base URL of the admin API, where it is mounted (default: $CRONGUARD_URL)." placeholder:"URL"`
	Token   string        `help:"Bearer token of the admin API (default: $CRONGUARD_TOKEN)."`
	JSON    bool          `name:"json" help:"Print the API's JSON, for scripts."`
	Timeout time.Duration `default:"1m" help:"Bound on each request; 0 for none (a long run may need it)."`

	Jobs    jobsCmd    `cmd:"" help:"List the jobs: schedule, switch, last run, runs going."`
	History historyCmd `cmd:"" help:"Show a job's history, newest first."`
	Run     runCmd     `cmd:"" help:"Run a job now: one whole run, or chosen items."`
	Disable disableCmd `cmd:"" help:"Switch a job off on every instance (its runs stop before their next batch)."`
	Enable  enableCmd  `cmd:"" help:"Switch a job on again."`
	Watch   watchCmd   `cmd:"" help:"A live table of the jobs, refreshed until interrupted."`
}

// usageError is a wrong command line: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// failed is an operation that failed and was already reported: exit code 1.
var errFailed = errors.New("operation failed")

// kongExit carries kong's exit code (after --help) out of kong.Parse.
type kongExit int

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, e env) (code int) {
	var c cli
	defer func() {
		if r := recover(); r != nil {
			k, ok := r.(kongExit)
			if !ok {
				panic(r)
			}
			code = int(k)
		}
	}()
	parser, err := kong.New(&c, kong.Name("cronguard"),
		kong.Description("Client of the cronguard admin API. Exit codes: 0 ok, 1 the operation failed, 2 usage."),
		kong.Writers(e.Out, e.Err), kong.Exit(func(code int) { panic(kongExit(code)) }))
	if err != nil {
		fmt.Fprintln(e.Err, "cronguard:", err)
		return exitUsage
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintf(e.Err, "cronguard: %v\n(see cronguard --help)\n", err)
		return exitUsage
	}
	a, err := c.app(ctx, e)
	if err == nil {
		err = kctx.Run(a)
	}
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(e.Err, "cronguard: %v\n(see cronguard --help)\n", err)
		return exitUsage
	case errors.Is(err, errFailed):
		return exitFailed
	}
	fmt.Fprintln(e.Err, "cronguard:", err)
	return exitFailed
}

// app is what every command runs with.
type app struct {
	ctx  context.Context
	env  env
	api  *client
	json bool
}

// app checks the URL and token (flags, else environment) and makes the client.
func (c *cli) app(ctx context.Context, e env) (*app, error) {
	raw, token := c.URL, c.Token
	if raw == "" {
		raw = e.Getenv("CRONGUARD_URL")
	}
	if token == "" {
		token = e.Getenv("CRONGUARD_TOKEN")
	}
	if raw == "" {
		return nil, &usageError{"no API URL: give --url or set CRONGUARD_URL"}
	}
	if token == "" {
		return nil, &usageError{"no token: give --token or set CRONGUARD_TOKEN"}
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &usageError{fmt.Sprintf("URL %q: want http(s)://host[:port][/path]", raw)}
	}
	if c.Timeout < 0 {
		return nil, &usageError{fmt.Sprintf("--timeout %s: must not be negative", c.Timeout)}
	}
	return &app{ctx: ctx, env: e, api: newClient(u, token, c.Timeout), json: c.JSON}, nil
}
