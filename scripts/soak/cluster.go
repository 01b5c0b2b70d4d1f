package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// replicas is the number of `signet serve` processes of every run.
const replicas = 3

// slot is one of the three replica positions. A killed replica leaves its
// slot empty until it is restarted. Every request the soak's load sends
// (Sign, JWKS fetch) holds the slot's in-flight count; draining a slot takes
// it out of rotation and waits for them, the way a load balancer drains a
// backend, so that a kill measures what the survivors do rather than the
// requests that were cut in half.
type slot struct {
	rep      *replica
	conn     *grpc.ClientConn
	client   signetv1.SignerServiceClient
	inflight sync.WaitGroup
	history  []incarnation
}

// incarnation is one process's time in a slot.
type incarnation struct {
	n        int
	up, down time.Time // down is zero while it runs
}

type cluster struct {
	mu    sync.Mutex
	slots [replicas]*slot
	rr    atomic.Uint64
}

func newCluster() *cluster {
	c := &cluster{}
	for i := range c.slots {
		c.slots[i] = &slot{}
	}
	return c
}

// put installs a started replica in its slot.
func (c *cluster) put(r *replica) error {
	conn, err := grpc.NewClient(r.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.slots[r.idx]
	s.rep, s.conn, s.client = r, conn, signetv1.NewSignerServiceClient(conn)
	s.history = append(s.history, incarnation{n: r.incarnation, up: r.started})
	return nil
}

// drain takes slot i out of rotation, waits for the requests in flight to
// it, and returns its replica and client (still running: the caller kills it).
func (c *cluster) drain(i int) (*replica, signetv1.SignerServiceClient, *grpc.ClientConn) {
	c.mu.Lock()
	s := c.slots[i]
	r, cl, conn := s.rep, s.client, s.conn
	s.rep, s.client, s.conn = nil, nil, nil
	c.mu.Unlock()
	s.inflight.Wait()
	return r, cl, conn
}

// markDown records when slot i's replica died.
func (c *cluster) markDown(i int, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.slots[i].history
	if len(h) > 0 && h[len(h)-1].down.IsZero() {
		h[len(h)-1].down = at
	}
}

// lease is a request's hold on a live replica; done releases it.
type lease struct {
	slot        int
	incarnation int
	http        string
	client      signetv1.SignerServiceClient
	done        func()
}

// acquire holds slot i's replica if it is live.
func (c *cluster) acquire(i int) (lease, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.slots[i]
	if s.rep == nil {
		return lease{}, false
	}
	s.inflight.Add(1)
	return lease{slot: i, incarnation: s.rep.incarnation, http: s.rep.http, client: s.client, done: s.inflight.Done}, true
}

// next holds the next live replica in round-robin order.
func (c *cluster) next() (lease, bool) {
	for range replicas {
		if l, ok := c.acquire(int(c.rr.Add(1) % replicas)); ok {
			return l, true
		}
	}
	return lease{}, false
}

// random holds a live replica chosen at random.
func (c *cluster) random() (lease, bool) {
	start := rand.IntN(replicas) // #nosec G404 -- load spreading, not security
	for k := range replicas {
		if l, ok := c.acquire((start + k) % replicas); ok {
			return l, true
		}
	}
	return lease{}, false
}

func (c *cluster) histories() [replicas][]incarnation {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [replicas][]incarnation
	for i, s := range c.slots {
		out[i] = append([]incarnation(nil), s.history...)
	}
	return out
}

func (c *cluster) closeAll() {
	for i := range c.slots {
		r, _, conn := c.drain(i)
		if conn != nil {
			_ = conn.Close()
		}
		if r != nil {
			r.p.kill()
		}
	}
}

// jwksHTTP fetches the JWKS from the replicas (pollers and the front).
var jwksHTTP = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 5 * time.Second}}

// front is what the verifiers fetch the JWKS from: a plain HTTP forwarder
// to a live replica chosen at random for each request, as a load balancer in
// front of the replicas would be. Request and response headers go through
// unchanged (If-None-Match, ETag, Cache-Control), so each verifier's cache
// sees exactly what Signet sent.
type front struct {
	c   *cluster
	rec *recorder
	srv *http.Server
	url string
}

func startFront(c *cluster, rec *recorder) (*front, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &front{c: c, rec: rec, url: "http://" + l.Addr().String() + "/.well-known/jwks.json"}
	f.srv = &http.Server{Handler: f, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = f.srv.Serve(l) }()
	return f, nil
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l, ok := f.c.random()
	if !ok {
		f.rec.fetch("front", -1, 0, "no live replica")
		http.Error(w, "no live replica", http.StatusBadGateway)
		return
	}
	defer l.done()
	// #nosec G704 -- to a replica this program started on loopback, with the path the verifier asked for
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+l.http+r.URL.RequestURI(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	resp, err := jwksHTTP.Do(req) // #nosec G704 -- as above
	if err != nil {
		f.rec.fetch("front", l.slot, 0, err.Error())
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.rec.fetch("front", l.slot, 0, err.Error())
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	f.rec.fetch("front", l.slot, resp.StatusCode, "")
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

func (f *front) close() { _ = f.srv.Close() }

// pollJWKS fetches slot i's JWKS directly every interval until ctx ends,
// recording each answer and the kids it held: how fast a version reaches
// every replica, and how fast a revoked one leaves.
func pollJWKS(ctx context.Context, c *cluster, rec *recorder, i int, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l, ok := c.acquire(i)
		if !ok {
			continue
		}
		sent := time.Now()
		kids, code, err := fetchKids(ctx, "http://"+l.http+"/.well-known/jwks.json")
		got := time.Now()
		l.done()
		if ctx.Err() != nil {
			return
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		rec.fetch("poll", i, code, msg)
		if err == nil && code == http.StatusOK {
			rec.poll(pollRec{slot: i, incarnation: l.incarnation, sent: sent, got: got, kids: kids})
		}
	}
}

func fetchKids(ctx context.Context, url string) ([]string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := jwksHTTP.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, fmt.Errorf("status %s", resp.Status)
	}
	var doc struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return nil, resp.StatusCode, err
	}
	kids := make([]string, len(doc.Keys))
	for i, k := range doc.Keys {
		kids[i] = k.Kid
	}
	return kids, resp.StatusCode, nil
}
