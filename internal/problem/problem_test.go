package problem

import (
	"errors"
	"testing"
)

func TestUnder(t *testing.T) {
	var l List
	l.Add("cloud", "%q is not a cloud", "mars")
	l.Add("[2]", "empty")
	l.Add("", "whole")
	err := Under("identity_providers.corp", errors.Join(l.Err(), errors.New("plain")))
	var got []string
	for _, e := range Flatten(err) {
		got = append(got, e.Error())
	}
	want := []string{
		`identity_providers.corp.cloud: "mars" is not a cloud`,
		`identity_providers.corp[2]: empty`,
		`identity_providers.corp: whole`,
		`identity_providers.corp: plain`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("problem %d = %q, want %q", i, got[i], want[i])
		}
	}
	if Under("x", nil) != nil || (&List{}).Err() != nil {
		t.Error("no problem must stay nil")
	}
}
