package admin

import (
	"fmt"
	"slices"
	"time"

	"github.com/cronguard/cronguard"
)

// chartRuns is how many runs the job page charts at most: the newest.
// The chart has room for at least chartSlots bars, so that a few runs make
// thin bars on the right, not blocks.
const (
	chartRuns  = 100
	chartSlots = 40
)

// Chart geometry, in SVG user units (the SVG scales to the page's width).
const (
	chartW      = 600.0
	chartPanelH = 80.0 // height of each panel: durations on top, items below
	chartGap    = 24.0 // between the panels, for the lower panel's caption
	chartTop    = 16.0 // room for the top panel's caption
)

// chart is the job page's SVG: one bar per run for its duration, and one
// for its items (processed, with the failed stacked on top), oldest on the
// left and the newest at the right edge. Every number is computed here; the template only places them.
type chart struct {
	Runs        int
	W, H        float64
	DurY, ItemY float64 // top of each panel
	DurBase     float64 // bottom of each panel: the axis lines
	ItemBase    float64
	DurLabelY   float64 // baseline of each panel's caption
	ItemLabelY  float64
	PanelH      float64
	Duration    []bar
	Processed   []bar
	Failed      []bar
	MaxDuration string // the top of the duration scale
	MaxItems    int    // the top of the items scale
	Summary     string // for screen readers
}

// bar is one rectangle and its tooltip.
type bar struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

// newChart charts the newest chartRuns runs among entries (newest first).
func newChart(entries []cronguard.HistoryEntry) chart {
	var runs []*cronguard.Report
	for _, e := range entries {
		if e.Kind == cronguard.EventFinished && e.Report != nil {
			runs = append(runs, e.Report)
			if len(runs) == chartRuns {
				break
			}
		}
	}
	slices.Reverse(runs) // oldest on the left
	c := chart{
		Runs: len(runs), W: chartW, H: chartTop + 2*chartPanelH + chartGap,
		DurY: chartTop, ItemY: chartTop + chartPanelH + chartGap, PanelH: chartPanelH,
	}
	c.DurBase, c.ItemBase = c.DurY+chartPanelH, c.ItemY+chartPanelH
	c.DurLabelY, c.ItemLabelY = c.DurY-5, c.ItemY-5
	if len(runs) == 0 {
		return c
	}
	var maxD time.Duration
	for _, r := range runs {
		maxD = max(maxD, r.Duration)
		c.MaxItems = max(c.MaxItems, r.Processed+r.Failed)
	}
	c.MaxDuration = formatDuration(maxD)
	slots := max(len(runs), chartSlots)
	step := chartW / float64(slots)
	width := max(step*0.8, 0.5)
	for i, r := range runs {
		x := float64(slots-len(runs)+i)*step + (step-width)/2 // the newest at the right edge
		tip := runTitle(r)
		h := scale(float64(r.Duration), float64(maxD))
		c.Duration = append(c.Duration, bar{X: x, Y: c.DurY + chartPanelH - h, W: width, H: h, Class: "bar-" + outcomeClass(r), Title: tip})
		ph := scale(float64(r.Processed), float64(c.MaxItems))
		fh := scale(float64(r.Failed), float64(c.MaxItems))
		base := c.ItemBase
		c.Processed = append(c.Processed, bar{X: x, Y: base - ph, W: width, H: ph, Class: "bar-items", Title: tip})
		if r.Failed > 0 {
			c.Failed = append(c.Failed, bar{X: x, Y: base - ph - fh, W: width, H: fh, Class: "bar-failed", Title: tip})
		}
	}
	c.Summary = fmt.Sprintf("The last %d runs: longest %s, most items %d.", len(runs), c.MaxDuration, c.MaxItems)
	return c
}

// scale maps v in [0, top] to a bar height in [0, chartPanelH]; a run of
// zero still shows as a sliver, so every run has a bar.
func scale(v, top float64) float64 {
	if top <= 0 {
		return 0.5
	}
	return max(v/top*chartPanelH, 0.5)
}

// runTitle is a bar's tooltip.
func runTitle(r *cronguard.Report) string {
	return fmt.Sprintf("%s %s: %s in %s, %d processed, %d failed",
		formatTime(r.Start), r.Trigger, outcome(r), formatDuration(r.Duration), r.Processed, r.Failed)
}
