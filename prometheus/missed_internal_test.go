package cgprom

import "testing"

// TestFieldInt: once the core's Event has Missed, a missed event counts
// its Missed ticks (at least 1); until then every missed event counts 1.
func TestFieldInt(t *testing.T) {
	type withMissed struct{ Missed int }
	type withoutMissed struct{ Other int }
	for _, c := range []struct {
		v    any
		want int
	}{
		{withMissed{Missed: 3}, 3},
		{withMissed{Missed: 0}, 1},
		{withMissed{Missed: -2}, 1},
		{withoutMissed{Other: 5}, 1},
		{struct{ Missed string }{"7"}, 1},
		{42, 1},
	} {
		if got := fieldInt(c.v, "Missed", 1); got != c.want {
			t.Errorf("fieldInt(%#v) = %d, want %d", c.v, got, c.want)
		}
	}
}
