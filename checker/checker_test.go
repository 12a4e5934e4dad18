package main

import (
	"os"
	"path/filepath"
	"testing"
)

func check(t *testing.T, lines string) int {
	t.Helper()
	dir := t.TempDir()
	h := filepath.Join(dir, "history.jsonl")
	if err := os.WriteFile(h, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Args = []string{"checker", h, filepath.Join(dir, "verdict.json"), filepath.Join(dir, "timeline.html")}
	return run()
}

// A write acknowledged before a read starts must be seen by it.
func TestStaleReadIsInvalid(t *testing.T) {
	code := check(t, `{"index":0,"process":0,"type":"invoke","f":"write","key":"r","value":3,"time":10}
{"index":1,"process":0,"type":"ok","f":"write","key":"r","value":3,"time":20}
{"index":2,"process":1,"type":"invoke","f":"read","key":"r","value":null,"time":30}
{"index":3,"process":1,"type":"ok","f":"read","key":"r","value":0,"time":40}
`)
	if code != 1 {
		t.Fatalf("stale read judged %d, want 1 (invalid)", code)
	}
}

// A timed-out write may take effect later; a successful CAS from it is fine.
func TestUnknownWriteMayLandLater(t *testing.T) {
	code := check(t, `{"index":0,"process":0,"type":"invoke","f":"write","key":"r","value":3,"time":10}
{"index":1,"process":0,"type":"unknown","f":"write","key":"r","value":3,"time":20}
{"index":2,"process":1,"type":"invoke","f":"read","key":"r","value":null,"time":30}
{"index":3,"process":1,"type":"ok","f":"read","key":"r","value":0,"time":40}
{"index":4,"process":1,"type":"invoke","f":"cas","key":"r","value":[3,4],"time":50}
{"index":5,"process":1,"type":"ok","f":"cas","key":"r","value":[3,4],"time":60}
{"index":6,"process":2,"type":"invoke","f":"write","key":"r","value":5,"time":61}
{"index":7,"process":2,"type":"fail","f":"write","key":"r","value":5,"time":62}
`)
	if code != 0 {
		t.Fatalf("judged %d, want 0 (valid)", code)
	}
}

func TestBadLineIsAnError(t *testing.T) {
	code := check(t, `{"index":0,"process":0,"type":"invoke","f":"incr","key":"r","value":1,"time":1}
{"index":1,"process":0,"type":"ok","f":"incr","key":"r","value":1,"time":2}
`)
	if code != 2 {
		t.Fatalf("judged %d, want 2 (bad history)", code)
	}
}
