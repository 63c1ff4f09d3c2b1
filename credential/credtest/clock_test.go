package credtest

import (
	"testing"
	"time"
)

func TestClockRunsDueFunctionsInOrder(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewClock(start)
	var got []time.Duration
	record := func() { got = append(got, c.Now().Sub(start)) }
	c.AfterFunc(3*time.Second, record)
	c.AfterFunc(time.Second, func() {
		record()
		// Scheduled from inside Advance and due within its window: runs too.
		c.AfterFunc(time.Second, record)
	})
	stop := c.AfterFunc(2500*time.Millisecond, record)
	if !stop() || stop() {
		t.Fatal("stop: want true once, then false")
	}
	c.AfterFunc(11*time.Second, record) // not due yet
	c.Advance(10 * time.Second)
	want := []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("ran at %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ran at %v, want %v", got, want)
		}
	}
	if c.Now().Sub(start) != 10*time.Second {
		t.Fatalf("now +%v, want +10s", c.Now().Sub(start))
	}
}

func TestClockAdvanceNeverGoesBack(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewClock(start)
	ran := false
	c.AfterFunc(0, func() { ran = true })
	c.Advance(-time.Hour)
	if !c.Now().Equal(start) || !ran {
		t.Fatalf("Advance backwards: now %v, due function ran %v", c.Now(), ran)
	}
}
