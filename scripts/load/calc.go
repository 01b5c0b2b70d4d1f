package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// This file is the harness's arithmetic and its readings of /proc and of
// Prometheus text: everything here is pure (or reads one file) and has
// unit tests; the rest of the harness only drives load and prints.

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// Linux has reported 100 to user space on every architecture for decades
// (sysconf(_SC_CLK_TCK)); the harness runs on Linux only.
const clockTicks = 100

// parseProcStatCPU returns utime+stime of a /proc/<pid>/stat line: the CPU
// the process (all its threads) has used, user and system. The command name
// is in parentheses and may itself hold spaces and ')', so fields are
// counted from the last ')': state is field 3, utime field 14, stime 15.
func parseProcStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no ')' after the command name")
	}
	fields := strings.Fields(string(stat[i+1:]))
	const utime, stime = 14 - 3, 15 - 3 // indexes in fields, which start at field 3
	if len(fields) <= stime {
		return 0, fmt.Errorf("%d fields after the command name, want at least %d", len(fields), stime+1)
	}
	var ticks uint64
	for _, f := range []string{fields[utime], fields[stime]} {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("utime/stime %q: %v", f, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// processCPU reads the CPU time pid and its live child processes (nginx's
// workers) have used so far.
func processCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	cpu, err := parseProcStatCPU(b)
	if err != nil {
		return 0, err
	}
	children, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(children)) {
		if child, err := strconv.Atoi(f); err == nil {
			if c, err := processCPU(child); err == nil {
				cpu += c
			}
		}
	}
	return cpu, nil
}

// parseVmRSS returns VmRSS from /proc/<pid>/status, in bytes.
func parseVmRSS(status []byte) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q: want \"N kB\"", sc.Text())
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS %q: %v", f[0], err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmRSS line")
}

// processRSS reads the resident set of pid now.
func processRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

// cpuPer1000 is CPU time per 1000 operations, in milliseconds: Vault's CPU
// per 1000 tokens when ops counts tokens (a batch of 32 is 32 tokens).
func cpuPer1000(cpu time.Duration, ops int64) float64 {
	if ops <= 0 {
		return math.NaN()
	}
	return cpu.Seconds() * 1000 / float64(ops) * 1000
}

// phase is one measured load phase: what it did, in how long, and what CPU
// the server (the process under load) and the client (this process) used.
type phase struct {
	Name      string
	Ops       int64 // completed operations (RPCs, requests, or tokens)
	Errors    int64
	Wall      time.Duration
	ServerCPU time.Duration
	ClientCPU time.Duration
	P50, P99  time.Duration
}

// Rate is completed operations per second of wall time.
func (p phase) Rate() float64 {
	if p.Wall <= 0 {
		return math.NaN()
	}
	return float64(p.Ops) / p.Wall.Seconds()
}

// CPUPerOp is the CPU, server and client together, that one operation cost.
func (p phase) CPUPerOp() time.Duration {
	if p.Ops <= 0 {
		return 0
	}
	return (p.ServerCPU + p.ClientCPU) / time.Duration(p.Ops)
}

// ServerCPUPerOp is the server's part of CPUPerOp.
func (p phase) ServerCPUPerOp() time.Duration {
	if p.Ops <= 0 {
		return 0
	}
	return p.ServerCPU / time.Duration(p.Ops)
}

// efficiency is Sign throughput divided by the ideal throughput, the one at
// which each Sign RPC would cost exactly one health RPC plus one bare
// signature, both at the CPU the Sign phase had. With per-op CPU costs from
// the same run, that is (health + bare) / sign per op: it does not move
// when other jobs on the machine take CPU from the whole run, as wall
// throughput does.
func efficiency(healthCPU, bareCPU, signCPU time.Duration) float64 {
	if signCPU <= 0 {
		return math.NaN()
	}
	return float64(healthCPU+bareCPU) / float64(signCPU)
}

// wallEfficiency is the same ratio from wall-clock rates only, the way the
// issue first measured it: Sign rate ÷ 1/(1/health rate + 1/bare rate). It
// is right only when every phase had the whole machine.
func wallEfficiency(signRate, healthRate, bareRate float64) float64 {
	if healthRate <= 0 || bareRate <= 0 {
		return math.NaN()
	}
	return signRate * (1/healthRate + 1/bareRate)
}

// addedLatency is what Signet adds to a lone request: Sign p50 less the
// gRPC floor's p50 and one bare signature.
func addedLatency(signP50, healthP50, bare time.Duration) time.Duration {
	return signP50 - healthP50 - bare
}

// ratio is a/b, NaN when b is not positive.
func ratio(a, b float64) float64 {
	if b <= 0 {
		return math.NaN()
	}
	return a / b
}

// histogram is a Prometheus histogram's cumulative buckets by upper bound,
// plus its count and sum.
type histogram struct {
	Buckets map[float64]float64 // le -> cumulative count (+Inf included)
	Count   float64
	Sum     float64
}

// parseHistogram reads the series of histogram name (without labels other
// than le) from Prometheus text exposition format.
func parseHistogram(r io.Reader, name string) (histogram, error) {
	h := histogram{Buckets: map[float64]float64{}}
	found := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		metric, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if i := strings.IndexByte(value, ' '); i >= 0 { // a timestamp follows
			value = value[:i]
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch {
		case strings.HasPrefix(metric, name+"_bucket{"):
			le, ok := labelValue(metric, "le")
			if !ok {
				return h, fmt.Errorf("%s without le", metric)
			}
			bound, err := strconv.ParseFloat(le, 64)
			if err != nil {
				return h, fmt.Errorf("%s: le %q: %v", metric, le, err)
			}
			h.Buckets[bound] = v
			found = true
		case metric == name+"_count":
			h.Count = v
			found = true
		case metric == name+"_sum":
			h.Sum = v
		}
	}
	if err := sc.Err(); err != nil {
		return h, err
	}
	if !found {
		return h, fmt.Errorf("no histogram %s", name)
	}
	return h, nil
}

func labelValue(metric, label string) (string, bool) {
	_, rest, ok := strings.Cut(metric, label+`="`)
	if !ok {
		return "", false
	}
	v, _, ok := strings.Cut(rest, `"`)
	return v, ok
}

// sub is the histogram of what was observed between before and h.
func (h histogram) sub(before histogram) histogram {
	d := histogram{Buckets: map[float64]float64{}, Count: h.Count - before.Count, Sum: h.Sum - before.Sum}
	for le, n := range h.Buckets {
		d.Buckets[le] = n - before.Buckets[le]
	}
	return d
}

// bucketCount is one bucket of a histogram as counts, not cumulative.
type bucketCount struct {
	Low, High float64 // (Low, High]
	N         float64
}

// counts turns cumulative buckets into per-bucket counts, lowest first.
func (h histogram) counts() []bucketCount {
	les := make([]float64, 0, len(h.Buckets))
	for le := range h.Buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	out := make([]bucketCount, 0, len(les))
	low, prev := math.Inf(-1), 0.0
	for _, le := range les {
		out = append(out, bucketCount{Low: low, High: le, N: h.Buckets[le] - prev})
		low, prev = le, h.Buckets[le]
	}
	return out
}

// mean is the mean observation.
func (h histogram) mean() float64 {
	if h.Count <= 0 {
		return math.NaN()
	}
	return h.Sum / h.Count
}

// summary collects the `load: NAME=VALUE` lines in the order they are set.
type summary struct {
	names  []string
	values map[string]string
}

func (s *summary) set(name string, v float64, format string) {
	if s.values == nil {
		s.values = map[string]string{}
	}
	if _, ok := s.values[name]; !ok {
		s.names = append(s.names, name)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		s.values[name] = "NaN"
		return
	}
	s.values[name] = fmt.Sprintf(format, v)
}

func (s *summary) write(w io.Writer) {
	for _, n := range s.names {
		fmt.Fprintf(w, "load: %s=%s\n", n, s.values[n])
	}
}

// wrkResult is what the harness reads from wrk's report (run with
// --latency): requests completed, the p50 and p99 latencies, and the
// requests that failed (non-2xx/3xx answers and socket errors).
type wrkResult struct {
	Requests int64
	P50, P99 time.Duration
	Errors   int64
}

// parseWrk reads wrk 4's text report.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveReq, have50, have99 bool
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 4 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: %q: %v", line, err)
			}
			r.Requests, haveReq = n, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, fmt.Errorf("wrk: %q: %v", line, err)
			}
			if f[0] == "50%" {
				r.P50, have50 = d, true
			} else {
				r.P99, have99 = d, true
			}
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:") && len(f) == 5:
			n, _ := strconv.ParseInt(f[4], 10, 64)
			r.Errors += n
		case strings.HasPrefix(strings.TrimSpace(line), "Socket errors:"):
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				r.Errors += n
			}
		}
	}
	if !haveReq || !have50 || !have99 {
		return r, fmt.Errorf("wrk: no request count or latency distribution in its report (run with --latency):\n%s", out)
	}
	return r, nil
}

// parseWrkDuration reads wrk's latencies: 512.00us, 1.70ms, 2.01s, 1.00m.
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}}
	for _, u := range units {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			return time.Duration(f * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("duration %q has no unit", s)
}
