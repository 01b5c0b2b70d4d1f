package authz

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Refusals of unauthenticated callers are audited at a bounded rate, so that
// a flood from the network neither fills the disk (after which every Sign
// fails closed) nor pushes real records out of a container log. Each peer
// address (IPv4, or an IPv6 /64) gets a line per second after a burst, all
// peers together a bounded number; the rest are counted and written as one
// summary line every RefusalSummaryInterval. Every refusal is counted in the
// metrics whatever the audit log records.
const (
	refusalsPerPeer        = 1 // lines per second per peer address, after the burst
	refusalPeerBurst       = 10
	refusalsAll            = 50 // lines per second for all peers together
	refusalAllBurst        = 100
	maxRefusalPeers        = 4096 // peer buckets kept; the limiter's own memory is bounded
	RefusalSummaryInterval = 10 * time.Second
)

type refusalLimiter struct {
	mu    sync.Mutex
	peers map[netip.Prefix]*rate.Limiter
	all   *rate.Limiter
	// Refusals not recorded one by one since the last summary, and from
	// how many distinct peer buckets (counted up to maxRefusalPeers).
	summarized int64
	since      time.Time
	from       map[netip.Prefix]struct{}
	// swept is when idle buckets were last dropped: at most once a second
	// when the map is full, so that a flood from many addresses does not
	// make every refusal walk the whole map.
	swept time.Time
}

func newRefusalLimiter() *refusalLimiter {
	return &refusalLimiter{peers: map[netip.Prefix]*rate.Limiter{}, all: rate.NewLimiter(refusalsAll, refusalAllBurst),
		from: map[netip.Prefix]struct{}{}}
}

// peerKey is the bucket of an address: IPv4 addresses one each, IPv6 by
// /64 (one host's share), an unknown address all in one.
func peerKey(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// allow says whether a refusal from addr gets an audit line of its own; if
// not it is counted for the next summary.
func (q *refusalLimiter) allow(addr netip.Addr, now time.Time) bool {
	key := peerKey(addr)
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.peers[key]
	if l == nil {
		if len(q.peers) >= maxRefusalPeers && now.Sub(q.swept) >= time.Second {
			q.forgetIdle(now)
		}
		if len(q.peers) < maxRefusalPeers {
			l = rate.NewLimiter(refusalsPerPeer, refusalPeerBurst)
			q.peers[key] = l
		}
		// With every bucket busy, a new peer gets no line of its own:
		// its refusals are summarised.
	}
	if l != nil && l.AllowN(now, 1) && q.all.AllowN(now, 1) {
		return true
	}
	if q.summarized == 0 {
		q.since = now
	}
	q.summarized++
	if len(q.from) < maxRefusalPeers {
		q.from[key] = struct{}{}
	}
	return false
}

// forgetIdle drops the buckets that have refilled: a peer that comes back
// starts from a full bucket either way.
func (q *refusalLimiter) forgetIdle(now time.Time) {
	q.swept = now
	for k, l := range q.peers {
		if l.TokensAt(now) >= refusalPeerBurst {
			delete(q.peers, k)
		}
	}
}

// summary returns the summary record of the refusals not recorded since the
// last one, and starts counting afresh; ok is false if there were none.
func (q *refusalLimiter) summary(now time.Time) (r Record, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.forgetIdle(now)
	if q.summarized == 0 {
		return Record{}, false
	}
	r = Record{Caller: "unauthenticated", RPC: "*", Outcome: "denied", Summarized: q.summarized,
		Reason: fmt.Sprintf("%d more refusals of unauthenticated callers from %d peer addresses since %s, over the audit rate of %d a second per peer",
			q.summarized, len(q.from), q.since.UTC().Format(time.RFC3339), refusalsPerPeer)}
	q.summarized, q.since = 0, time.Time{}
	clear(q.from)
	return r, true
}

// AuditRefusal audits the refusal of an unauthenticated caller from peer,
// within the per-peer rate: recorded is false when the refusal is left to
// the next summary line. err is an audit failure (the refusal stands
// either way).
func (a *Authorizer) AuditRefusal(r Record, peer netip.Addr) (recorded bool, err error) {
	if a.audit == nil {
		return true, nil
	}
	if !a.refusals.allow(peer, a.now()) {
		return false, nil
	}
	return true, a.Audit(r)
}

// auditSummary writes the summary of the refusals not audited one by one.
func (a *Authorizer) auditSummary() {
	if a.audit == nil {
		return
	}
	if r, ok := a.refusals.summary(a.now()); ok {
		if err := a.Audit(r); err != nil {
			a.watcher.log.Error("audit: cannot write the summary of refused unauthenticated callers", "err", err)
		}
	}
}

// ReopenAudit opens the audit file afresh (SIGHUP after log rotation).
func (a *Authorizer) ReopenAudit() error { return a.audit.reopen() }
