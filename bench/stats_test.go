package bench

import (
	"math"
	"testing"
)

func TestSpreadOf(t *testing.T) {
	// 0..10: p10 is 1, the median 5, p90 9, whatever the input order.
	samples := []float64{10, 0, 9, 1, 8, 2, 7, 3, 6, 4, 5}
	got := SpreadOf(samples)
	if got != (Spread{P10: 1, Median: 5, P90: 9}) {
		t.Fatalf("SpreadOf = %+v", got)
	}
	if samples[0] != 10 {
		t.Fatal("SpreadOf sorted its caller's slice")
	}
	if even := SpreadOf([]float64{1, 2, 3, 4}); even.Median != 2.5 {
		t.Fatalf("median of 1..4 = %v, want 2.5", even.Median)
	}
	if empty := SpreadOf(nil); !math.IsNaN(empty.Median) {
		t.Fatalf("median of nothing = %v, want NaN", empty.Median)
	}
}
