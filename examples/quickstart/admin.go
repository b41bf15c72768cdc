package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/cronguard/cronguard"
	"github.com/cronguard/cronguard/admin"
	cgprom "github.com/cronguard/cronguard/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// serveAdmin serves, on addr (127.0.0.1:0: a free port on loopback only),
// the admin handler of s — the dashboard at /, the JSON API under /api —
// with a fresh random token, and metrics' Prometheus metrics at /metrics
// (no token: keep a metrics endpoint on a network only Prometheus reaches).
// It returns the base URL, the token and a function that shuts the server
// down, waiting at most timeout for requests in flight; call it once.
func serveAdmin(s *cronguard.Scheduler, metrics *cgprom.Collector, addr string) (url, token string, shutdown func(timeout time.Duration), err error) {
	token = rand.Text() // 26 characters, 130 bits
	h, err := admin.Handler(s, admin.Token(token), admin.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return "", "", nil, err
	}
	// A registry of its own, not the global one: run may be called more
	// than once in a process (the tests do).
	reg := prometheus.NewRegistry()
	if err := reg.Register(metrics); err != nil {
		return "", "", nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", h)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", "", nil, fmt.Errorf("admin API: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Error("quickstart: admin API", "err", err)
		}
	}()
	shutdown = func(timeout time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			_ = srv.Close() // a run-now request still going: Stop cancels its run
		}
		<-served
	}
	return "http://" + ln.Addr().String(), token, shutdown, nil
}
