package idp

import (
	"crypto/sha256"
	"strconv"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/httpx"
)

func TestCacheBoundedAndEvictsStaleFirst(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := newCache(8)
	key := func(i int) [sha256.Size]byte { return sha256.Sum256([]byte(strconv.Itoa(i))) }
	live := func(i int) cacheEntry {
		return cacheEntry{claims: &Claims{Subject: strconv.Itoa(i)}, gen: 2, until: now.Add(time.Hour)}
	}
	for i := range 1000 {
		c.put(key(i), live(i), now)
		if n := c.len(); n > 8 {
			t.Fatalf("cache holds %d entries, bound 8", n)
		}
	}

	// Fill with live entries, then make one stale and one expired: the
	// next two insertions must evict exactly those.
	c = newCache(8)
	for i := range 8 {
		c.put(key(i), live(i), now)
	}
	c.m[key(3)] = cacheEntry{claims: &Claims{}, gen: 1, until: now.Add(time.Hour)}
	c.m[key(5)] = cacheEntry{claims: &Claims{}, gen: 2, until: now}
	c.put(key(100), live(100), now)
	c.put(key(101), live(101), now)
	for _, i := range []int{0, 1, 2, 4, 6, 7, 100, 101} {
		if _, ok := c.get(key(i), 2); !ok {
			t.Errorf("live entry %d was evicted while stale ones remained", i)
		}
	}
	if _, ok := c.m[key(3)]; ok {
		t.Error("stale entry kept")
	}
	if _, ok := c.m[key(5)]; ok {
		t.Error("expired entry kept")
	}
	if _, ok := c.get(key(0), 3); ok {
		t.Error("entry served for another generation")
	}
	// Overwriting a present key never evicts.
	c.put(key(0), live(0), now)
	if c.len() != 8 {
		t.Errorf("len = %d after overwrite", c.len())
	}
}

func TestIssuerTemplate(t *testing.T) {
	st := &keyState{templated: true, issPrefix: "https://login.microsoftonline.com/", issSuffix: "/v2.0"}
	tid := "3f5c7c2a-8d4e-4b1a-9c6f-2e7d8a9b0c1d"
	tests := []struct {
		iss, tid string
		want     bool
	}{
		{"https://login.microsoftonline.com/" + tid + "/v2.0", tid, true},
		{"https://login.microsoftonline.com/" + tid + "/v2.0/", tid, false},
		{"https://login.microsoftonline.com/" + tid + "/v2.0", "a" + tid[1:], false},
		{"https://login.microsoftonline.com//v2.0", "", false},
		{"https://login.microsoftonline.com/x/v2.0", tid, false},
		{"https://evil.example/" + tid + "/v2.0", tid, false},
	}
	for _, tt := range tests {
		if got := st.issuerOK(tt.iss, tt.tid); got != tt.want {
			t.Errorf("issuerOK(%q, %q) = %v, want %v", tt.iss, tt.tid, got, tt.want)
		}
	}
}

// TestKeyURLRule pins the rule for where metadata and keys may come from:
// key material over plain http from a non-loopback host could be replaced on
// the path, letting anyone there mint accepted tokens.
func TestKeyURLRule(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"https://login.microsoftonline.com/x", true},
		{"http://127.0.0.1:8080/keys", true},
		{"http://127.9.9.9/keys", true},
		{"http://[::1]:80/keys", true},
		{"http://localhost/keys", true},
		{"http://LOCALHOST/keys", true},
		{"http://login.microsoftonline.com/keys", false},
		{"http://10.0.0.1/keys", false},
		{"http://127.0.0.1.nip.io/keys", false},
		{"http://[::ffff:10.0.0.1]/keys", false},
		{"https://user:pass@example.com/keys", false},
		{"ftp://example.com/keys", false},
		{"file:///etc/passwd", false},
		{"/relative", false},
		{"", false},
	}
	for _, tt := range tests {
		if _, err := httpx.SecureURL(tt.url); (err == nil) != tt.ok {
			t.Errorf("SecureURL(%q) = %v, want ok=%v", tt.url, err, tt.ok)
		}
	}
}

func TestNumericDate(t *testing.T) {
	tests := []struct {
		in   string
		ok   bool
		want int64
	}{
		{"1700000000", true, 1700000000},
		{"1700000000.75", true, 1700000000},
		{"1.7e9", true, 1700000000},
		{"0", true, 0},
		{`"1700000000"`, false, 0},
		{"true", false, 0},
		{"-1", false, 0},
		{"1e400", false, 0},
		{"253402300800", false, 0},
		{"{}", false, 0},
		{"[1]", false, 0},
	}
	for _, tt := range tests {
		var d numericDate
		err := d.UnmarshalJSON([]byte(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("UnmarshalJSON(%s) error = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && d.Unix() != tt.want {
			t.Errorf("UnmarshalJSON(%s) = %v", tt.in, d.Unix())
		}
	}
}

func TestMaxTokenSizeText(t *testing.T) {
	if strconv.Itoa(MaxTokenSize) != maxTokenSizeText {
		t.Errorf("detail says %s bytes, limit is %d", maxTokenSizeText, MaxTokenSize)
	}
}
