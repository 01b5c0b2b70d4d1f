package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bojand/ghz/runner"
	vegeta "github.com/tsenart/vegeta/v12/lib"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/local"
)

// selfCPU is the CPU this process (the load client) has used, at
// microsecond resolution.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// meter samples the CPU of the process under load (pid; 0: none) and of
// this one around a phase.
type meter struct {
	pid        int
	start      time.Time
	srv, cli   time.Duration
	srvErrSeen error
}

func startMeter(pid int) *meter {
	m := &meter{pid: pid}
	if pid > 0 {
		m.srv, m.srvErrSeen = processCPU(pid)
	}
	m.cli = selfCPU()
	m.start = time.Now()
	return m
}

// stop fills in the phase's wall time and CPU.
func (m *meter) stop(p *phase) {
	p.Wall = time.Since(m.start)
	p.ClientCPU = selfCPU() - m.cli
	if m.pid > 0 {
		if now, err := processCPU(m.pid); err == nil && m.srvErrSeen == nil {
			p.ServerCPU = now - m.srv
		}
	}
}

// grpcTarget is where and how ghz connects.
type grpcTarget struct {
	addr          string
	ca, cert, key string // empty: plaintext
	serverPID     int    // whose CPU the phase's ServerCPU is
	connections   uint
}

// runGRPC drives call at concurrency c for d with ghz's runner and returns
// the phase. Every call sends req and decodes the answer into resp()
// (fixedCodec). A short unmeasured warm-up at the same concurrency comes
// first.
func runGRPC(t grpcTarget, name, call string, req proto.Message, resp func() proto.Message, c int, d time.Duration) (phase, error) {
	data := delimited(req)
	set := protoset()
	opts := func(dur time.Duration) []runner.Option {
		o := []runner.Option{
			runner.WithProtosetBinary(set),
			runner.WithDefaultCallOptions([]grpc.CallOption{callOption(req, resp)}),
			runner.WithConcurrency(uint(c)),
			runner.WithRunDuration(dur),
			runner.WithDurationStopAction("wait"),
			runner.WithBinaryData(data),
			runner.WithTimeout(10 * time.Second),
			runner.WithDisableTemplateFuncs(true),
			runner.WithDisableTemplateData(true),
			runner.WithConnections(max(t.connections, 1)),
		}
		if t.ca == "" {
			o = append(o, runner.WithInsecure(true))
		} else {
			o = append(o, runner.WithRootCertificate(t.ca), runner.WithCertificate(t.cert, t.key))
		}
		return o
	}
	if _, err := runner.Run(call, t.addr, opts(min(d/4, 500*time.Millisecond))...); err != nil {
		return phase{}, fmt.Errorf("%s: warm-up: %w", name, err)
	}
	m := startMeter(t.serverPID)
	rep, err := runner.Run(call, t.addr, opts(d)...)
	p := phase{Name: name}
	m.stop(&p)
	if err != nil {
		return p, fmt.Errorf("%s: %w", name, err)
	}
	p.Ops = int64(rep.Count)
	for _, n := range rep.ErrorDist {
		p.Errors += int64(n)
	}
	if p.Errors > 0 {
		return p, fmt.Errorf("%s: %d of %d calls failed: %v", name, p.Errors, p.Ops, rep.ErrorDist)
	}
	for _, l := range rep.LatencyDistribution {
		switch l.Percentage {
		case 50:
			p.P50 = l.Latency
		case 99:
			p.P99 = l.Latency
		}
	}
	return p, nil
}

// runHTTP drives tgt with vegeta at as many requests per second as workers
// concurrent requests over conns keep-alive connections allow, for d. Each
// successful response counts perToken operations (a Transit batch of 32
// signs 32 tokens). pid is the process whose CPU is the phase's ServerCPU.
func runHTTP(name string, tgt vegeta.Target, workers, conns int, d time.Duration, pid int, perToken int64, want int) (phase, error) {
	attack := func(dur time.Duration) (vegeta.Metrics, int64) {
		atk := vegeta.NewAttacker(vegeta.Workers(uint64(workers)), vegeta.MaxWorkers(uint64(workers)),
			vegeta.Connections(conns), vegeta.MaxConnections(conns), vegeta.KeepAlive(true), vegeta.HTTP2(false),
			vegeta.Timeout(10*time.Second))
		var m vegeta.Metrics
		var bad int64
		for res := range atk.Attack(vegeta.NewStaticTargeter(tgt), vegeta.Rate{Freq: 0}, dur, name) {
			if int(res.Code) != want {
				bad++
			}
			m.Add(res)
		}
		m.Close()
		return m, bad
	}
	attack(min(d/4, 500*time.Millisecond))
	mt := startMeter(pid)
	m, bad := attack(d)
	p := phase{Name: name}
	mt.stop(&p)
	p.Ops = int64(m.Requests-uint64(bad)) * perToken
	p.Errors = bad
	p.P50, p.P99 = m.Latencies.P50, m.Latencies.P99
	if bad > 0 {
		return p, fmt.Errorf("%s: %d of %d requests did not answer %d: %v %v", name, bad, m.Requests, want, m.StatusCodes, m.Errors)
	}
	return p, nil
}

// bareResult is the in-process signature rate of one algorithm on the
// local backend: one goroutine's time per signature (the latency a lone
// request pays) and GOMAXPROCS goroutines' rate and CPU per signature.
type bareResult struct {
	Alg        backends.Algorithm
	Single     time.Duration // per signature, one goroutine
	Rate       float64       // signatures/s, GOMAXPROCS goroutines
	CPUPerSign time.Duration
}

// measureBare signs with the local backend in this process, the call
// Signet's Sign wraps, for d in one goroutine and then d in GOMAXPROCS.
func measureBare(dir string, alg backends.Algorithm, d time.Duration) (bareResult, error) {
	store, err := local.Open(dir, backends.OpenOptions{Getenv: func(string) string { return kek }})
	if err != nil {
		return bareResult{}, err
	}
	defer store.Close()
	ring := backends.KeyRing{Name: "bare-" + string(alg), Algorithm: alg}
	v, err := store.CreateVersion(context.Background(), ring, "")
	if err != nil {
		return bareResult{}, err
	}
	input := make([]byte, 300) // about a token's signing input
	rand.Read(input)
	sign := func() error {
		_, err := store.Sign(context.Background(), ring, v.ID, input)
		return err
	}
	res := bareResult{Alg: alg}
	for i := 0; i < 200; i++ { // warm up
		if err := sign(); err != nil {
			return res, err
		}
	}
	var n int64
	start := time.Now()
	for time.Since(start) < d {
		for i := 0; i < 50; i++ {
			sign()
		}
		n += 50
	}
	res.Single = time.Since(start) / time.Duration(n)

	procs := runtime.GOMAXPROCS(0)
	var total atomic.Int64
	var wg sync.WaitGroup
	cpu0, start := selfCPU(), time.Now()
	for range procs {
		wg.Go(func() {
			var k int64
			for time.Since(start) < d {
				for i := 0; i < 50; i++ {
					sign()
				}
				k += 50
			}
			total.Add(k)
		})
	}
	wg.Wait()
	wall, cpu := time.Since(start), selfCPU()-cpu0
	res.Rate = float64(total.Load()) / wall.Seconds()
	res.CPUPerSign = cpu / time.Duration(total.Load())
	return res, nil
}

// fetch GETs url and returns the body of a 200.
func fetch(client *http.Client, url string) ([]byte, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var b []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil {
			break
		}
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, nil
}

// cpuProfile fetches a CPU profile of the server from its admin listener
// over the next seconds into path, in the background.
func cpuProfile(admin, path string, seconds int) func() error {
	done := make(chan error, 1)
	go func() {
		client := &http.Client{Timeout: time.Duration(seconds+30) * time.Second}
		b, err := fetch(client, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, seconds))
		if err == nil {
			err = os.WriteFile(path, b, 0o644)
		}
		done <- err
	}()
	return func() error { return <-done }
}

// runWrk drives GET url with wrk (2 threads, conns keep-alive
// connections) for d after a short warm-up. The client's CPU is wrk's own,
// from its rusage when it exits.
func runWrk(name, wrk, url string, conns int, d time.Duration, pid int) (phase, error) {
	run := func(dur time.Duration) (wrkResult, time.Duration, error) {
		secs := fmt.Sprintf("%ds", max(int(dur.Round(time.Second).Seconds()), 1)) // wrk counts in whole seconds
		cmd := exec.Command(wrk, "-t2", fmt.Sprintf("-c%d", conns), "-d"+secs, "--latency", url)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return wrkResult{}, 0, fmt.Errorf("%s: wrk: %v\n%s", name, err, out)
		}
		var cpu time.Duration
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
		r, err := parseWrk(string(out))
		return r, cpu, err
	}
	if _, _, err := run(time.Second); err != nil {
		return phase{}, err
	}
	m := startMeter(pid)
	r, cpu, err := run(d)
	p := phase{Name: name}
	m.stop(&p)
	if err != nil {
		return p, err
	}
	p.ClientCPU = cpu
	p.Ops, p.Errors, p.P50, p.P99 = r.Requests-r.Errors, r.Errors, r.P50, r.P99
	if r.Errors > 0 {
		return p, fmt.Errorf("%s: %d of %d requests failed", name, r.Errors, r.Requests)
	}
	return p, nil
}
