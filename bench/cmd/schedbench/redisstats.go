package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// statsTimeout bounds CONFIG RESETSTAT and INFO commandstats, each.
const statsTimeout = 5 * time.Second

// cmdStat is Redis's own account of one command over a phase's measured
// ticks (INFO commandstats after CONFIG RESETSTAT): the time its one thread
// spent executing it, without the network or the client.
type cmdStat struct {
	Name  string  `json:"command"`
	Calls int64   `json:"calls"`
	Usec  int64   `json:"usec"`
	Top   bool    `json:"sent_by_phase"` // sent by the phase's client; false: only called from its scripts
	PerUs float64 `json:"usec_per_call"`
}

// resetStats zeroes the server's command statistics (CONFIG RESETSTAT) on
// the benchmark's own connection, not the phase's.
func (r *redisServer) resetStats() error {
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	return r.admin.ConfigResetStat(ctx).Err()
}

// commandStats reads INFO commandstats. The commands of the benchmark's own
// connection (config, info) are left out.
func (r *redisServer) commandStats() ([]cmdStat, error) {
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	s, err := r.admin.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	return parseCommandStats(s), nil
}

// parseCommandStats reads lines like
// "cmdstat_evalsha:calls=6000,usec=15600,usec_per_call=2.60,...".
// A subcommand keeps its "|" name (client|setinfo).
func parseCommandStats(info string) []cmdStat {
	var out []cmdStat
	for line := range strings.SplitSeq(info, "\n") {
		name, fields, _ := strings.Cut(strings.TrimSpace(line), ":")
		name, ok := strings.CutPrefix(name, "cmdstat_")
		if !ok {
			continue
		}
		if top, _, _ := strings.Cut(name, "|"); top == "config" || top == "info" {
			continue
		}
		st := cmdStat{Name: name}
		for kv := range strings.SplitSeq(fields, ",") {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "calls":
				st.Calls = n
			case "usec":
				st.Usec = n
			}
		}
		if st.Calls > 0 {
			st.PerUs = float64(st.Usec) / float64(st.Calls)
			out = append(out, st)
		}
	}
	slices.SortFunc(out, func(a, b cmdStat) int { return int(b.Usec - a.Usec) })
	return out
}

// sentNames is the set of command names a phase's client sent while
// measured. Redis counts a command a script calls under that command's own
// name too, and the script's time already includes it: only what the
// client sent adds up to the server's time per run.
type sentNames struct{ m sync.Map }

func (s *sentNames) add(name string) {
	if _, ok := s.m.Load(name); !ok {
		s.m.Store(name, true)
	}
}

func (s *sentNames) has(name string) bool {
	top, _, _ := strings.Cut(name, "|") // go-redis names "client|setinfo" "client"
	_, ok := s.m.Load(top)
	return ok
}

// markSent sets Top on the stats of commands the client sent and returns
// their total time: the server's time for the phase.
func markSent(stats []cmdStat, sent *sentNames) (usec int64) {
	for i := range stats {
		if sent.has(stats[i].Name) {
			stats[i].Top = true
			usec += stats[i].Usec
		}
	}
	return usec
}

// cmdSummary is one command's median figures over the reps of a row.
type cmdSummary struct {
	name                        string
	perRun, perCall, usecPerRun float64
	sent                        bool // seen by the client's hooks (in most reps): not only called inside scripts or on pub/sub
}

// String is "evalsha 1.00/run × 2.61 µs", with a † when the client's hooks
// did not see it sent.
func (c cmdSummary) String() string {
	s := fmt.Sprintf("%s %.2f/run × %.2f µs", c.name, c.perRun, c.perCall)
	if !c.sent {
		s += "†"
	}
	return s
}

// commandSummaries is, for the phases of (key, busy), each command's calls
// per run and µs per call, medians over the reps, the costliest first.
func (r *results) commandSummaries(key string, busy bool) []cmdSummary {
	type acc struct{ perRun, perCall, usecPerRun, top []float64 }
	by := map[string]*acc{}
	for _, p := range r.Phases {
		if p.Lib != key || p.Busy != busy || p.Runs == 0 {
			continue
		}
		for _, c := range p.RedisCmds {
			if top, _, _ := strings.Cut(c.Name, "|"); !c.Top && (top == "hello" || top == "client") {
				continue // a new connection of the pool (as in connSetup), not a run's
			}
			a := by[c.Name]
			if a == nil {
				a = &acc{}
				by[c.Name] = a
			}
			top := 0.0
			if c.Top {
				top = 1
			}
			a.perRun = append(a.perRun, float64(c.Calls)/float64(p.Runs))
			a.perCall = append(a.perCall, c.PerUs)
			a.usecPerRun = append(a.usecPerRun, float64(c.Usec)/float64(p.Runs))
			a.top = append(a.top, top)
		}
	}
	out := make([]cmdSummary, 0, len(by))
	for name, a := range by {
		out = append(out, cmdSummary{name: name, perRun: median(a.perRun), perCall: median(a.perCall),
			usecPerRun: median(a.usecPerRun), sent: median(a.top) >= 0.5})
	}
	slices.SortFunc(out, func(a, b cmdSummary) int {
		if a.usecPerRun != b.usecPerRun {
			if a.usecPerRun > b.usecPerRun {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	return out
}

// commandsTable is the server's time per run and per call of every Redis row.
func (r *results) commandsTable(cfg config) string {
	var b strings.Builder
	b.WriteString("| | redis-server µs per run (reps) | commands: calls per run × µs per call |\n|---|---|---|\n")
	for _, row := range comparisonRows(cfg) {
		if !row.l.redis {
			continue
		}
		v := r.perRep(row.l.key, row.busy, field(rusRun))
		var cmds []string
		for _, c := range r.commandSummaries(row.l.key, row.busy) {
			cmds = append(cmds, c.String())
		}
		fmt.Fprintf(&b, "| %s | %s (%s) | %s |\n", row.label(), cell(v, "%.2f µs", nil), spread(v, "%.2f"), strings.Join(cmds, "; "))
	}
	return b.String()
}
