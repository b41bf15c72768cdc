package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// meta says when, where and how the numbers were taken.
type meta struct {
	Date        string `json:"date"`
	Command     string `json:"command"`
	NumCPU      int    `json:"nproc"`
	GOMAXPROCS  int    `json:"gomaxprocs"`
	CPUModel    string `json:"cpu_model"`
	OS          string `json:"os"`
	Go          string `json:"go"`
	Redis       string `json:"redis_server"`
	LoadStart   string `json:"loadavg_start"`
	LoadEnd     string `json:"loadavg_end"`
	DurationSec int    `json:"duration_s"`
	start       time.Time
}

func newMeta(cfg config) meta {
	now := time.Now()
	return meta{
		Date:       now.UTC().Format("2006-01-02 15:04 MST"),
		Command:    command(cfg),
		NumCPU:     runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		CPUModel:   cpuModel(),
		OS:         runtime.GOOS + "/" + runtime.GOARCH,
		Go:         runtime.Version(),
		Redis:      redisVersion(),
		LoadStart:  loadavg(),
		start:      now,
	}
}

func (m *meta) finish() {
	m.LoadEnd = loadavg()
	m.DurationSec = int(time.Since(m.start).Seconds() + 0.5)
}

// command is how to run this again: `make bench` runs it from bench/.
func command(cfg config) string {
	args := strings.Join(os.Args[1:], " ")
	if args == "-out out" || args == "-out=out" {
		return "make bench  (cd bench && go run ./cmd/schedbench -out out)"
	}
	return strings.TrimSpace("cd bench && go run ./cmd/schedbench " + args)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func redisVersion() string {
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		return "unknown"
	}
	for f := range strings.FieldsSeq(string(out)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return strings.TrimSpace(string(out))
}

// loadavg is the 1, 5 and 15 minute load averages: how busy the machine
// was with other work, which these numbers are sensitive to.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
