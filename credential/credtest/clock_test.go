package credtest

import (
	"testing"
	"time"
)

func TestClockRunsDueFunctionsInOrder(t *testing.T) {
	c := NewClock(time.Time{})
	start := c.Now()
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
	if c.Now().Sub(start) != 10*time.Second || c.Pending() != 0 {
		t.Fatalf("now +%v, pending %d", c.Now().Sub(start), c.Pending())
	}
}

func TestClockSetNeverGoesBack(t *testing.T) {
	c := NewClock(time.Time{})
	now := c.Now()
	ran := false
	c.AfterFunc(0, func() { ran = true })
	c.Set(now.Add(-time.Hour))
	if !c.Now().Equal(now) || !ran {
		t.Fatalf("Set backwards: now %v, due function ran %v", c.Now(), ran)
	}
	if _, ok := c.NextDue(); ok {
		t.Fatal("NextDue with nothing scheduled")
	}
}

func TestSeqRand(t *testing.T) {
	r := SeqRand(0.1, 0.9)
	if a, b, c := r(), r(), r(); a != 0.1 || b != 0.9 || c != 0.9 {
		t.Fatalf("got %v %v %v", a, b, c)
	}
	if SeqRand()() != 0.5 {
		t.Fatal("default not 0.5")
	}
}
