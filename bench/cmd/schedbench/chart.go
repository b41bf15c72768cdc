package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Size of the chart.
const (
	chartWidth  = 9 * vg.Inch
	chartHeight = 6.5 * vg.Inch
)

// panel is one metric of the scaling curve.
type panel struct {
	title, unit string
	f           func(p phaseResult) float64
}

var panels = [][]panel{
	{
		{"register one job", "µs", func(p phaseResult) float64 { return p.Reg.NsPerJob / 1e3 }},
		{"heap per registered job", "bytes", func(p phaseResult) float64 { return p.Reg.BytesPerJob }},
	},
	{
		{"start lateness p99", "ms", latP99},
		{"CPU per 1,000 runs", "ms", cpu1k},
	},
}

var libStyle = map[string]struct {
	label string
	color color.Color
}{
	libRobfig.key:   {"robfig/cron v3", color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xff}},
	libCGMemory.key: {"cronguard (memory)", color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}},
}

// writeChart draws the scaling curve as 2×2 panels, x = registered jobs on
// a log scale, with a dashed line at 2× cronguard's smallest-size value
// (the bound of issue 8), as scaling.png and scaling.svg.
func writeChart(dir string, pts []phaseResult) error {
	plots := make([][]*plot.Plot, len(panels))
	for i, row := range panels {
		for j, pn := range row {
			p, err := drawPanel(pn, pts, i == 0 && j == 1) // the heap panel has room
			if err != nil {
				return err
			}
			plots[i] = append(plots[i], p)
		}
	}
	png := vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(chartWidth, chartHeight), vgimg.UseDPI(110))}
	svg := vgsvg.New(chartWidth, chartHeight)
	for _, c := range []struct {
		canvas vg.CanvasSizer
		name   string
		write  func(f *os.File) error
	}{
		{png, "scaling.png", func(f *os.File) error { _, err := png.WriteTo(f); return err }},
		{svg, "scaling.svg", func(f *os.File) error { _, err := svg.WriteTo(f); return err }},
	} {
		tiles := draw.Tiles{Rows: 2, Cols: 2, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
			PadTop: vg.Millimeter * 3, PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 3, PadRight: vg.Millimeter * 3}
		dc := draw.New(c.canvas)
		canvases := plot.Align(plots, tiles, dc)
		for i := range plots {
			for j := range plots[i] {
				plots[i][j].Draw(canvases[i][j])
			}
		}
		if err := writeFile(filepath.Join(dir, c.name), c.write); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, write func(f *os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// drawPanel draws one metric; one panel carries the legend.
func drawPanel(pn panel, pts []phaseResult, legend bool) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = pn.title
	p.X.Label.Text = "registered jobs (log scale)"
	p.Y.Label.Text = pn.unit
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = sizeTicks(pts)
	p.Y.Min = 0
	p.Y.Tick.Marker = plainTicks{}
	p.Legend.Top = true
	p.Legend.Left = true
	maxY := 0.0
	for _, key := range []string{libRobfig.key, libCGMemory.key} {
		var xys plotter.XYs
		for _, pt := range pts {
			if pt.Lib == key {
				xys = append(xys, plotter.XY{X: float64(pt.Registered), Y: pn.f(pt)})
				maxY = max(maxY, pn.f(pt))
			}
		}
		if len(xys) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, fmt.Errorf("chart %s: %w", pn.title, err)
		}
		st := libStyle[key]
		line.Color, points.Color = st.color, st.color
		line.Width = vg.Points(1.5)
		p.Add(line, points)
		if legend {
			p.Legend.Add(st.label, line, points)
		}
		if key == libCGMemory.key {
			bound := plotter.NewFunction(func(float64) float64 { return 2 * xys[0].Y })
			bound.Color, bound.Dashes = st.color, []vg.Length{vg.Points(4), vg.Points(3)}
			bound.Width = vg.Points(0.8)
			p.Add(bound)
			if legend {
				p.Legend.Add("2× cronguard at the smallest size: issue 8's bound", bound)
			}
			maxY = max(maxY, 2*xys[0].Y)
		}
	}
	p.Y.Max = maxY * 1.15
	if legend {
		p.Y.Max = maxY * 1.6 // room for the legend above the lines
	}
	return p, nil
}

// sizeTicks marks the measured sizes on the x axis, as 1k, 10k, 100k.
func sizeTicks(pts []phaseResult) plot.ConstantTicks {
	var ticks plot.ConstantTicks
	seen := map[int]bool{}
	for _, p := range pts {
		if n := p.Registered; !seen[n] {
			seen[n] = true
			label := fmt.Sprint(n)
			if n%1000 == 0 {
				label = fmt.Sprintf("%dk", n/1000)
			}
			ticks = append(ticks, plot.Tick{Value: float64(n), Label: label})
		}
	}
	return ticks
}

// plainTicks are gonum's default ticks labelled without trailing zeros.
type plainTicks struct{}

// Ticks implements plot.Ticker.
func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i, t := range ticks {
		if t.Label != "" {
			ticks[i].Label = strconv.FormatFloat(t.Value, 'f', -1, 64)
		}
	}
	return ticks
}
