// Package benchstat is the statistics of ferry's side-by-side benchmarks
// (make bench): on a shared machine one run of a job moves by more than
// what is measured, so paired differences are summed up by their median
// and that median's confidence interval.
package benchstat

import (
	"math"
	"sort"
)

// MedianCI is the median of v and its 95% confidence interval: the sorted
// sample's values at the ranks (from 1) floor(n/2 - 0.98 sqrt(n)) and
// ceil(1 + n/2 + 0.98 sqrt(n)), from the binomial's normal approximation,
// which assumes nothing of the noise's shape. An empty v gives zeros.
func MedianCI(v []float64) (med, lo, hi float64) {
	n := len(v)
	if n == 0 {
		return 0, 0, 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	h := 0.98 * math.Sqrt(float64(n))
	// As indexes from 0: one less than the ranks.
	l, u := int(math.Floor(float64(n)/2-h))-1, int(math.Ceil(float64(n)/2+h))
	return med, s[max(l, 0)], s[min(u, n-1)]
}
