package main

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseProcStatCPU(t *testing.T) {
	// A command name with a space and a ')' in it; utime 1234, stime 566.
	stat := "4242 (vault) x) S 1 4242 4242 0 -1 4194560 22861 0 0 0 1234 566 0 0 20 0 12 0 3617 1388810240 30393 " +
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	got, err := parseProcStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if want := 18 * time.Second; got != want { // (1234+566) ticks at 100 Hz
		t.Errorf("CPU = %v, want %v", got, want)
	}
	for _, bad := range []string{"", "1 (x S 1 2", "1 (x) S 1 2 3", "1 (x) S 1 2 3 4 5 6 7 8 9 10 a 1 0"} {
		if _, err := parseProcStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseProcStatCPU(%q) gave no error", bad)
		}
	}
}

func TestProcessCPUReadsThisProcess(t *testing.T) {
	if _, err := processCPU(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	rss, err := processRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if rss == 0 {
		t.Error("RSS of this process is 0")
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tsignet\nVmPeak:\t 1000 kB\nVmRSS:\t   36864 kB\nThreads:\t9\n"
	got, err := parseVmRSS([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if got != 36<<20 {
		t.Errorf("RSS = %d, want %d", got, 36<<20)
	}
	if _, err := parseVmRSS([]byte("Name:\tx\n")); err == nil {
		t.Error("no VmRSS line: no error")
	}
	if _, err := parseVmRSS([]byte("VmRSS:\t12 MB\n")); err == nil {
		t.Error("VmRSS not in kB: no error")
	}
}

func TestCPUPer1000(t *testing.T) {
	// 2.2 s of Vault CPU for 50 000 tokens is 44 ms per 1000.
	if got := cpuPer1000(2200*time.Millisecond, 50000); math.Abs(got-44) > 1e-9 {
		t.Errorf("cpuPer1000 = %v, want 44", got)
	}
	if got := cpuPer1000(time.Second, 0); !math.IsNaN(got) {
		t.Errorf("no tokens: %v, want NaN", got)
	}
}

func TestPhase(t *testing.T) {
	p := phase{Ops: 20000, Wall: 2 * time.Second, ServerCPU: 3 * time.Second, ClientCPU: time.Second}
	if got := p.Rate(); got != 10000 {
		t.Errorf("Rate = %v, want 10000", got)
	}
	if got := p.CPUPerOp(); got != 200*time.Microsecond {
		t.Errorf("CPUPerOp = %v, want 200µs", got)
	}
	if got := p.ServerCPUPerOp(); got != 150*time.Microsecond {
		t.Errorf("ServerCPUPerOp = %v, want 150µs", got)
	}
	if got := (phase{}).CPUPerOp(); got != 0 {
		t.Errorf("no ops: CPUPerOp = %v", got)
	}
	if got := (phase{Ops: 1}).Rate(); !math.IsNaN(got) {
		t.Errorf("no wall time: Rate = %v, want NaN", got)
	}
}

func TestEfficiency(t *testing.T) {
	// Health 60µs + bare 16µs of CPU per op against Sign's 95µs: 0.8.
	if got := efficiency(60*time.Microsecond, 16*time.Microsecond, 95*time.Microsecond); math.Abs(got-0.8) > 1e-9 {
		t.Errorf("efficiency = %v, want 0.8", got)
	}
	if got := efficiency(1, 1, 0); !math.IsNaN(got) {
		t.Errorf("no Sign cost: %v, want NaN", got)
	}
	// The issue's own figures: 10.1k Sign, 16.2k health, 62k bare.
	if got := wallEfficiency(10100, 16200, 62000); math.Abs(got-0.786) > 0.001 {
		t.Errorf("wallEfficiency = %v, want 0.786", got)
	}
	if got := wallEfficiency(1, 0, 1); !math.IsNaN(got) {
		t.Errorf("no health rate: %v, want NaN", got)
	}
	if got := addedLatency(280*time.Microsecond, 150*time.Microsecond, 30*time.Microsecond); got != 100*time.Microsecond {
		t.Errorf("addedLatency = %v, want 100µs", got)
	}
	if got := ratio(102, 44); math.Abs(got-2.318) > 0.001 {
		t.Errorf("ratio = %v", got)
	}
	if got := ratio(1, 0); !math.IsNaN(got) {
		t.Errorf("ratio(1, 0) = %v, want NaN", got)
	}
}

const metrics = `# HELP signet_vault_batch_size Signatures per Vault Transit sign request (batch_input).
# TYPE signet_vault_batch_size histogram
signet_vault_batch_size_bucket{le="1"} 10
signet_vault_batch_size_bucket{le="2"} 12
signet_vault_batch_size_bucket{le="4"} 12
signet_vault_batch_size_bucket{le="32"} 20
signet_vault_batch_size_bucket{le="+Inf"} 20
signet_vault_batch_size_sum 300
signet_vault_batch_size_count 20
# TYPE signet_vault_batch_size_other gauge
signet_vault_batch_size_other 7
`

func TestParseHistogram(t *testing.T) {
	h, err := parseHistogram(strings.NewReader(metrics), "signet_vault_batch_size")
	if err != nil {
		t.Fatal(err)
	}
	if h.Count != 20 || len(h.Buckets) != 5 || h.Buckets[math.Inf(1)] != 20 || h.Buckets[2] != 12 {
		t.Fatalf("parsed %+v", h)
	}
	before := histogram{Buckets: map[float64]float64{1: 10, 2: 10, 4: 10, 32: 10, math.Inf(1): 10}, Count: 10, Sum: 10}
	d := h.sub(before)
	if d.Count != 10 {
		t.Errorf("difference count = %v, want 10", d.Count)
	}
	var got []float64
	for _, b := range d.counts() {
		got = append(got, b.N)
	}
	want := []float64{0, 2, 0, 8, 0} // per bucket, no longer cumulative
	if len(got) != len(want) {
		t.Fatalf("counts = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("counts = %v, want %v", got, want)
		}
	}
	if m := d.mean(); m != 29 { // (300-10)/10
		t.Errorf("mean = %v, want 29", m)
	}
	if m := (histogram{}).mean(); !math.IsNaN(m) {
		t.Errorf("empty: mean = %v, want NaN", m)
	}
	if _, err := parseHistogram(strings.NewReader(metrics), "signet_missing"); err == nil {
		t.Error("a missing histogram gave no error")
	}
}

func TestSummary(t *testing.T) {
	var s summary
	s.set("sign_efficiency_es256_c64", 0.9349, "%.2f")
	s.set("jwks_ratio", math.NaN(), "%.2f")
	s.set("sign_efficiency_es256_c64", 0.95, "%.2f") // replaced in place
	var b strings.Builder
	s.write(&b)
	want := "load: sign_efficiency_es256_c64=0.95\nload: jwks_ratio=NaN\n"
	if b.String() != want {
		t.Errorf("summary:\n%s\nwant:\n%s", b.String(), want)
	}
}

const wrkReport = `Running 2s test @ http://127.0.0.1:18081/jwks.json
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.35ms    2.42ms  24.56ms   88.03%
    Req/Sec    16.09k     2.32k   23.60k    72.50%
  Latency Distribution
     50%  812.00us
     75%    3.16ms
     90%    5.18ms
     99%   12.02ms
  64111 requests in 2.01s, 10.52MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  31936.52
Transfer/sec:      5.24MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkReport)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 64111, P50: 812 * time.Microsecond, P99: 12020 * time.Microsecond, Errors: 7}
	if r != want {
		t.Errorf("parsed %+v, want %+v", r, want)
	}
	if _, err := parseWrk("Running 2s test\n"); err == nil {
		t.Error("a report without figures gave no error")
	}
	for in, want := range map[string]time.Duration{"1.50s": 1500 * time.Millisecond, "2.00m": 2 * time.Minute, "7us": 7 * time.Microsecond} {
		if got, err := parseWrkDuration(in); err != nil || got != want {
			t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parseWrkDuration("12"); err == nil {
		t.Error("a duration without a unit gave no error")
	}
}
