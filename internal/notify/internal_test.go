package notify

import (
	"testing"
	"time"
)

// TestCompareIDs: stream ids order by their numbers, not their text.
func TestCompareIDs(t *testing.T) {
	ordered := []string{"999-0", "1000-0", "1000-2", "1000-10", "1001-0"}
	for i := range ordered {
		for j := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := compareIDs(ordered[i], ordered[j]); got != want {
				t.Errorf("compareIDs(%s, %s) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
}

// TestJitter: a wait is shortened by at most 20%, never lengthened, so the
// first retry of the default schedule comes within 5 s.
func TestJitter(t *testing.T) {
	for range 1000 {
		d := DefaultSchedule[0]
		if j := jitter(d); j > d || j < d*4/5 {
			t.Fatalf("jitter(%s) = %s, want within [%s, %s]", d, j, d*4/5, d)
		}
	}
}

// TestNew: what New refuses, and the defaults it fills in.
func TestNew(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without a URL succeeded")
	}
	cfg, _ := ParseConfig("https://h.example.com/x", "", "")
	if _, err := New(Options{Config: cfg, Store: (*fakeStore)(nil)}); err == nil {
		t.Error("New with a webhook URL and no key succeeded")
	}
	cfg, _ = ParseConfig("slack+https://hooks.slack.com/services/T/B/X", "", "")
	if _, err := New(Options{Config: cfg}); err == nil {
		t.Error("New without a store succeeded")
	}
	n, err := New(Options{Config: cfg, Store: (*fakeStore)(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if n.o.MinIdle != DefaultMinIdle || n.o.Workers != DefaultWorkers || n.o.Client.Timeout != Timeout || n.Consumer() == "" {
		t.Errorf("defaults: %+v", n.o)
	}
	if n.ttl < 2*(27*time.Hour) {
		t.Errorf("state lifetime %s shorter than twice the schedule", n.ttl)
	}
}

// fakeStore only satisfies the interface; New never calls it.
type fakeStore struct{ Store }
