package tlsserve

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	h := slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})
	zl := newZapLogger(h).Named("obtain").With(zap.String("identifier", "a.example"))

	zl.Debug("hidden")
	zl.Info("obtaining certificate", zap.Int("attempt", 2), zap.Strings("names", []string{"a", "b"}))
	zl.Warn("retrying", zap.Error(errors.New("boom")))
	zl.Error("failed")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3 (debug filtered by the slog level):\n%s", len(lines), buf.String())
	}
	var recs []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, m)
	}
	want := []struct{ level, msg string }{{"INFO", "obtaining certificate"}, {"WARN", "retrying"}, {"ERROR", "failed"}}
	for i, w := range want {
		if recs[i]["level"] != w.level || recs[i]["msg"] != w.msg {
			t.Errorf("line %d: level %v msg %v, want %s %s", i, recs[i]["level"], recs[i]["msg"], w.level, w.msg)
		}
		if recs[i]["logger"] != "obtain" || recs[i]["identifier"] != "a.example" {
			t.Errorf("line %d: logger %v identifier %v, want obtain a.example", i, recs[i]["logger"], recs[i]["identifier"])
		}
	}
	if recs[0]["attempt"] != float64(2) || len(recs[0]["names"].([]any)) != 2 {
		t.Errorf("fields not carried: %v", recs[0])
	}
	if recs[1]["error"] != "boom" {
		t.Errorf("error field = %v, want boom", recs[1]["error"])
	}
}
