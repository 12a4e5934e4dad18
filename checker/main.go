// Command checker judges a history recorded by `omnicloud chaos --history` for
// linearizability with Porcupine (github.com/anishathalye/porcupine, vendored under
// vendor/ so the build needs no network). It shares no code with the system under test.
//
// The history is JSON lines, one event each, as Jepsen records them:
//
//	{"index":0,"process":2,"type":"invoke","f":"cas","key":"reg-1","value":[3,4],"time":123}
//	{"index":1,"process":2,"type":"ok","f":"cas","key":"reg-1","value":[3,4],"time":456}
//
// type is invoke, then one of ok (it happened, with the value read for a read), fail
// (it certainly did not happen: dropped) or unknown (a timeout: it may have happened at
// any time after its invocation). time is monotonic nanoseconds. The model is one
// integer register per key (initially 0) with read, write and compare-and-set.
//
// Usage: checker HISTORY.jsonl VERDICT.json [TIMELINE.html]
// Exit status: 0 valid, 1 invalid, 2 unknown (the search timed out) or a bad history.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// event is one line of the history.
type event struct {
	Index   int             `json:"index"`
	Process int             `json:"process"`
	Type    string          `json:"type"`
	F       string          `json:"f"`
	Key     string          `json:"key"`
	Value   json.RawMessage `json:"value"`
	Time    int64           `json:"time"`
	Node    string          `json:"node,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// input of an operation; Arg is the value written, or [expected, new] for cas.
type input struct {
	F        string
	Key      string
	Value    int64
	Expected int64
	New      int64
}

// output of an operation: the value a read returned; Unknown when it timed out.
type output struct {
	Value   int64
	Unknown bool
}

// meta is what the verdict and the timeline say of an operation.
type meta struct {
	Invoke   int     `json:"invokeIndex"`
	Complete int     `json:"completeIndex"`
	Process  int     `json:"process"`
	F        string  `json:"f"`
	Key      string  `json:"key"`
	Value    string  `json:"value"`
	Type     string  `json:"type"`
	Node     string  `json:"node,omitempty"`
	CallMs   float64 `json:"callMs"`
	ReturnMs float64 `json:"returnMs"`
}

var register = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(input).Key
			if _, seen := byKey[k]; !seen {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() interface{} { return int64(0) },
	Step: func(state, in, out interface{}) (bool, interface{}) {
		s := state.(int64)
		i := in.(input)
		o := out.(output)
		switch i.F {
		case "read":
			return o.Value == s, s
		case "write":
			return true, i.Value
		case "cas":
			if s == i.Expected {
				return true, i.New
			}
			// A CAS that timed out may have failed; an acknowledged one may not.
			return o.Unknown, s
		}
		return false, s
	},
	DescribeOperation: func(in, out interface{}) string {
		i := in.(input)
		o := out.(output)
		suffix := ""
		if o.Unknown {
			suffix = " (unknown)"
		}
		switch i.F {
		case "read":
			return fmt.Sprintf("read %s -> %d", i.Key, o.Value)
		case "write":
			return fmt.Sprintf("write %s %d%s", i.Key, i.Value, suffix)
		default:
			return fmt.Sprintf("cas %s %d->%d%s", i.Key, i.Expected, i.New, suffix)
		}
	},
	DescribeState: func(state interface{}) string { return fmt.Sprintf("%d", state.(int64)) },
	DescribeOperationMetadata: func(info interface{}) string {
		m := info.(meta)
		return fmt.Sprintf("history lines %d..%d on %s", m.Invoke, m.Complete, m.Node)
	},
}

// verdict is the machine-readable answer.
type verdict struct {
	Verdict      string         `json:"verdict"`
	Checker      string         `json:"checker"`
	Events       int            `json:"events"`
	OpsChecked   int            `json:"opsChecked"`
	Outcomes     map[string]int `json:"outcomes"`
	Keys         int            `json:"keys"`
	Anomaly      string         `json:"anomaly,omitempty"`
	FailedKeys   []string       `json:"failedKeys,omitempty"`
	Linearized   int            `json:"linearizedBeforeFailure,omitempty"`
	Operations   []meta         `json:"operations,omitempty"`
	Timeline     string         `json:"timeline,omitempty"`
	CheckSeconds float64        `json:"checkSeconds"`
}

func parseInput(e event) (input, error) {
	in := input{F: e.F, Key: e.Key}
	switch e.F {
	case "read":
	case "write":
		if err := json.Unmarshal(e.Value, &in.Value); err != nil {
			return in, fmt.Errorf("line %d: write value: expected an integer: %v", e.Index, err)
		}
	case "cas":
		var pair [2]int64
		if err := json.Unmarshal(e.Value, &pair); err != nil {
			return in, fmt.Errorf("line %d: cas value: expected [expected, new]: %v", e.Index, err)
		}
		in.Expected, in.New = pair[0], pair[1]
	default:
		return in, fmt.Errorf("line %d: f: expected read, write or cas, got %q", e.Index, e.F)
	}
	return in, nil
}

// operations pairs each invoke with its completion. Failed operations and reads of
// unknown outcome are dropped (they changed nothing); writes and CASes of unknown
// outcome stay open until after the end of the history.
func operations(events []event, outcomes map[string]int) ([]porcupine.Operation, error) {
	pending := map[int]event{}
	var ops []porcupine.Operation
	var last int64
	for _, e := range events {
		if e.Time > last {
			last = e.Time
		}
		if e.Type == "invoke" {
			if p, busy := pending[e.Process]; busy {
				return nil, fmt.Errorf("line %d: process %d invoked again while line %d is open", e.Index, e.Process, p.Index)
			}
			pending[e.Process] = e
			continue
		}
		inv, ok := pending[e.Process]
		if !ok {
			return nil, fmt.Errorf("line %d: %s of process %d without an invoke", e.Index, e.Type, e.Process)
		}
		delete(pending, e.Process)
		outcomes[e.Type]++
		in, err := parseInput(inv)
		if err != nil {
			return nil, err
		}
		m := meta{Invoke: inv.Index, Complete: e.Index, Process: e.Process, F: e.F, Key: e.Key,
			Value: string(e.Value), Type: e.Type, Node: inv.Node,
			CallMs: float64(inv.Time) / 1e6, ReturnMs: float64(e.Time) / 1e6}
		switch e.Type {
		case "ok":
			out := output{}
			if e.F == "read" {
				if err := json.Unmarshal(e.Value, &out.Value); err != nil {
					return nil, fmt.Errorf("line %d: read value: expected an integer: %v", e.Index, err)
				}
			}
			ops = append(ops, porcupine.Operation{ClientId: e.Process, Input: in, Call: inv.Time,
				Output: out, Return: e.Time, Metadata: m})
		case "fail":
		case "unknown":
			if e.F != "read" {
				ops = append(ops, porcupine.Operation{ClientId: e.Process, Input: in, Call: inv.Time,
					Output: output{Unknown: true}, Return: -1, Metadata: m})
			}
		default:
			return nil, fmt.Errorf("line %d: type: expected invoke, ok, fail or unknown, got %q", e.Index, e.Type)
		}
	}
	// Still open at the end: unknown too.
	for _, inv := range pending {
		outcomes["unknown"]++
		in, err := parseInput(inv)
		if err != nil {
			return nil, err
		}
		if inv.F != "read" {
			m := meta{Invoke: inv.Index, Complete: -1, Process: inv.Process, F: inv.F, Key: inv.Key,
				Value: string(inv.Value), Type: "unknown", Node: inv.Node,
				CallMs: float64(inv.Time) / 1e6}
			ops = append(ops, porcupine.Operation{ClientId: inv.Process, Input: in, Call: inv.Time,
				Output: output{Unknown: true}, Return: -1, Metadata: m})
		}
	}
	for i := range ops {
		if ops[i].Return == -1 {
			ops[i].Return = last + 1
			m := ops[i].Metadata.(meta)
			m.ReturnMs = -1
			ops[i].Metadata = m
		}
	}
	return ops, nil
}

func readHistory(path string) ([]event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var events []event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("%s line %d: %v", path, line, err)
		}
		events = append(events, e)
	}
	return events, sc.Err()
}

// offending lists the operations of the first failed key that no longest partial
// linearization could place, earliest call first: the one the checker got stuck on is
// among the first.
func offending(info porcupine.LinearizationInfo, ops []porcupine.Operation, keys []string) ([]meta, []string, int) {
	var failed []string
	var out []meta
	best := 0
	parts := info.PartialLinearizationsOperations()
	byKey := register.Partition(ops)
	for p, partials := range parts {
		longest := 0
		placed := map[int]bool{}
		for _, lin := range partials {
			if len(lin) > longest {
				longest = len(lin)
			}
		}
		if p >= len(byKey) || longest == len(byKey[p]) {
			continue
		}
		failed = append(failed, keys[p])
		for _, lin := range partials {
			if len(lin) == longest {
				for _, op := range lin {
					placed[op.Metadata.(meta).Invoke] = true
				}
				break
			}
		}
		if out != nil {
			continue
		}
		best = longest
		rest := []porcupine.Operation{}
		for _, op := range byKey[p] {
			if !placed[op.Metadata.(meta).Invoke] {
				rest = append(rest, op)
			}
		}
		sort.Slice(rest, func(i, j int) bool { return rest[i].Call < rest[j].Call })
		for i, op := range rest {
			if i == 8 {
				break
			}
			out = append(out, op.Metadata.(meta))
		}
	}
	return out, failed, best
}

func run() int {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: checker HISTORY.jsonl VERDICT.json [TIMELINE.html]")
		return 2
	}
	events, err := readHistory(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 2
	}
	outcomes := map[string]int{}
	ops, err := operations(events, outcomes)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 2
	}
	var keys []string
	for _, part := range register.Partition(ops) {
		keys = append(keys, part[0].Input.(input).Key)
	}
	started := time.Now()
	result, info := porcupine.CheckOperationsVerbose(register, ops, 120*time.Second)
	v := verdict{Checker: "porcupine v1.3.0, register/CAS model per key", Events: len(events),
		OpsChecked: len(ops), Outcomes: outcomes, Keys: len(keys),
		CheckSeconds: time.Since(started).Seconds()}
	switch result {
	case porcupine.Ok:
		v.Verdict = "valid"
	case porcupine.Illegal:
		v.Verdict = "invalid"
		v.Anomaly = "not linearizable: no order of the operations agrees with both their real-time order and a single register (a stale read or a lost update)"
		v.Operations, v.FailedKeys, v.Linearized = offending(info, ops, keys)
	default:
		v.Verdict = "unknown"
		v.Anomaly = "the search did not finish within 120s"
	}
	if len(os.Args) > 3 {
		if err := porcupine.VisualizePath(register, info, os.Args[3]); err != nil {
			fmt.Fprintln(os.Stderr, "error: writing the timeline:", err)
			return 2
		}
		v.Timeline = os.Args[3]
	}
	text, _ := json.MarshalIndent(v, "", "  ")
	if err := os.WriteFile(os.Args[2], append(text, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "error: writing the verdict:", err)
		return 2
	}
	fmt.Printf("%s: %d operations checked over %d keys (%v)\n", v.Verdict, v.OpsChecked, v.Keys, outcomes)
	switch v.Verdict {
	case "valid":
		return 0
	case "invalid":
		return 1
	}
	return 2
}

func main() {
	os.Exit(run())
}
