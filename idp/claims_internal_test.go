package idp

import (
	"reflect"
	"testing"
)

func TestInexactNames(t *testing.T) {
	tests := []struct {
		json string
		want bool
	}{
		{`{"oid":"a","roles":["x"],"tid":"b"}`, false},
		{`{"OID":"a"}`, true},
		{`{"oid":"a","Roles":["x"]}`, true},
		{`{"_CLAIM_NAMES":{}}`, true},
		{`{"Other":"a","x":{"OID":1},"y":[{"Roles":1}]}`, false},
		{`{"a":"OID","b":"Roles"}`, false},
		{`{"a":"x\"y","Tid":1}`, true},
		{`{"a":"x\\","Tid":1}`, true},
		{`{"o\u0069d":"a"}`, true},
		{`{"ſcp":"a"}`, true}, // U+017F folds to s in encoding/json
		{`{"oıd":"a"}`, true},
		{`{"aud":["a","b"],"exp":1,"nbf":2}`, false},
		{`[{"OID":1}]`, false},
		{`"unterminated`, false},
		{``, false},
	}
	for _, tt := range tests {
		if got := inexactNames([]byte(tt.json)); got != tt.want {
			t.Errorf("inexactNames(%s) = %v, want %v", tt.json, got, tt.want)
		}
	}
}

// FuzzClaimsDecode checks the fast struct decode against exact-name
// decoding: whatever UnmarshalJSON accepts, exact decoding must accept with
// the same result.
func FuzzClaimsDecode(f *testing.F) {
	for _, s := range []string{
		`{"oid":"a","roles":["x"],"tid":"b","exp":1,"aud":"x"}`,
		`{"OID":"a","oid":"b"}`,
		`{"oid":"b","OID":"a"}`,
		`{"Roles":"admin"}`,
		`{"roles":["a"],"Roles":["b"]}`,
		`{"exp":1,"EXP":"x"}`,
		`{"o\u0069d":"a","oid":"b"}`,
		`{"ſcp":"a","scp":"b"}`,
		`{"_claim_names":{"groups":"s"},"hasgroups":true}`,
		`{"tid":5,"tid":"x"}`,
		`{"_claim_names":{"groups":"a"},"_claim_names":{}}`,
		`{"_claim_names":{"groups":"a"},"_Claim_names":{}}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast tokenClaims
		if fast.UnmarshalJSON(b) != nil {
			return
		}
		var exact tokenClaims
		err := exact.unmarshalExact(b)
		if err == nil {
			err = exact.finish()
		}
		if err != nil {
			t.Fatalf("UnmarshalJSON accepted %q, exact decoding refused it: %v", b, err)
		}
		if !reflect.DeepEqual(fast, exact) {
			t.Fatalf("decoding %q:\nfast  %+v\nexact %+v", b, fast, exact)
		}
	})
}
