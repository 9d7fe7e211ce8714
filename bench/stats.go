package bench

import (
	"math"
	"slices"
)

// Spread is the median and the 10th and 90th percentiles of samples.
type Spread struct{ P10, Median, P90 float64 }

// SpreadOf summarises samples; an empty slice gives NaNs.
func SpreadOf(samples []float64) Spread {
	if len(samples) == 0 {
		return Spread{math.NaN(), math.NaN(), math.NaN()}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return Spread{P10: quantile(s, 0.1), Median: quantile(s, 0.5), P90: quantile(s, 0.9)}
}

// quantile interpolates linearly between the sorted samples around q.
func quantile(sorted []float64, q float64) float64 {
	pos := q * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	frac := pos - float64(lo)
	return sorted[lo]*(1-frac) + sorted[hi]*frac
}
