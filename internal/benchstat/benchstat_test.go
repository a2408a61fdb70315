package benchstat

import "testing"

func TestMedianCI(t *testing.T) {
	// 100 values 0..99: the median of an even count is the mean of the two
	// middle ones; the interval is at the ranks 40 and 61, values 39 and 60.
	v := make([]float64, 100)
	for i := range v {
		v[99-i] = float64(i) // unsorted on purpose
	}
	med, lo, hi := MedianCI(v)
	if med != 49.5 || lo != 39 || hi != 60 {
		t.Fatalf("MedianCI(0..99) = %v (%v..%v), want 49.5 (39..60)", med, lo, hi)
	}
	if v[0] != 99 {
		t.Fatal("MedianCI sorted its argument in place")
	}
	// Few values: the interval is the whole sample, never out of range.
	if med, lo, hi := MedianCI([]float64{3, 1, 2}); med != 2 || lo != 1 || hi != 3 {
		t.Fatalf("MedianCI(3,1,2) = %v (%v..%v), want 2 (1..3)", med, lo, hi)
	}
	if med, lo, hi := MedianCI(nil); med != 0 || lo != 0 || hi != 0 {
		t.Fatal("MedianCI(nil) is not zeros")
	}
}
