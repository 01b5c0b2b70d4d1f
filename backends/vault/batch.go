package vault

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/signet-dev/signet/backends"
)

// batcher coalesces concurrent Signs for one key version into batch_input
// requests (Transit answers a batch of 32 for about the CPU of a few single
// signatures). A Sign that finds no batch of its key version in flight is
// sent at once, so a lone Sign waits for nothing. While batches are in
// flight, arrivals queue, and the queue leaves as one batch when the first
// of these happens: it holds size signatures, its oldest has waited
// maxWait (batch_wait), or no batch of its key version is in flight any
// more. At most maxWorkers batches per key version are in flight.
//
// Sending whatever had queued as soon as any of 4 workers was free (the
// batcher before this one) kept batches small under load: at 64 concurrent
// Signs they averaged 7, and Vault spent 1.6 times the CPU per token of
// batches of 32.
type batcher struct {
	b       *Backend
	size    int
	maxWait time.Duration
	mu      sync.Mutex
	queues  map[queueKey]*queue
	// observe, when set (OpenOptions.OnBatch, or a test), sees the size of
	// every batch sent.
	observe func(size int)
}

// maxWorkers bounds the batch requests in flight per key version.
const maxWorkers = 4

// defaultBatchWait is how long a Sign may wait for its batch to fill while
// another batch of its key version is in flight (batch_wait): about one
// Transit round trip under load, so that a batch mostly waits for the one
// in flight to come back, and never much longer when Vault is slow.
const defaultBatchWait = 2 * time.Millisecond

type queueKey struct {
	ring    backends.KeyRing
	version int
}

type queue struct {
	pending  []*call
	inFlight int         // batches being sent
	timer    *time.Timer // armed while pending waits for maxWait; nil otherwise
}

type call struct {
	ctx    context.Context
	input  []byte
	queued time.Time
	done   chan result // buffered: the worker never blocks on a caller that left
}

type result struct {
	sig []byte
	err error
}

func newBatcher(b *Backend, size int, maxWait time.Duration) *batcher {
	return &batcher{b: b, size: size, maxWait: maxWait, queues: map[queueKey]*queue{}}
}

func (bt *batcher) sign(ctx context.Context, ring backends.KeyRing, version int, input []byte) ([]byte, error) {
	c := &call{ctx: ctx, input: input, queued: time.Now(), done: make(chan result, 1)}
	k := queueKey{ring, version}
	bt.mu.Lock()
	if bt.b.ctx.Err() != nil { // closed since Sign checked; see stop
		bt.mu.Unlock()
		return nil, errClosed
	}
	q := bt.queues[k]
	if q == nil {
		q = &queue{}
		bt.queues[k] = q
	}
	q.pending = append(q.pending, c)
	bt.dispatchLocked(k, q, c.queued)
	bt.mu.Unlock()
	select {
	case r := <-c.done:
		return r.sig, r.err
	case <-ctx.Done():
		return nil, classify(ctx.Err(), "signing")
	}
}

// due reports whether what q holds should leave now.
func (bt *batcher) due(q *queue, now time.Time) bool {
	return len(q.pending) > 0 &&
		(q.inFlight == 0 || len(q.pending) >= bt.size || now.Sub(q.pending[0].queued) >= bt.maxWait)
}

// take removes the next batch from q: up to size calls whose callers still
// wait.
func (bt *batcher) take(q *queue) []*call {
	var batch []*call
	for len(q.pending) > 0 && len(batch) < bt.size {
		c := q.pending[0]
		q.pending[0] = nil
		q.pending = q.pending[1:]
		if c.ctx.Err() == nil { // else its caller has given up
			batch = append(batch, c)
		}
	}
	return batch
}

// dispatchLocked starts a worker for each batch that is due, while fewer
// than maxWorkers are in flight, and arms the timer for what must wait. It
// runs with bt.mu held and the backend open: a worker is started only
// then, so that stop sees every worker that will ever start.
func (bt *batcher) dispatchLocked(k queueKey, q *queue, now time.Time) {
	for q.inFlight < maxWorkers && bt.due(q, now) {
		batch := bt.take(q)
		if len(batch) == 0 {
			continue
		}
		q.inFlight++
		bt.b.wg.Go(func() { bt.work(k, q, batch) })
	}
	bt.settleLocked(k, q, now)
}

// settleLocked arms q's timer for its oldest waiting call (when a worker
// could take it then), stops it when nothing waits, and forgets q once it
// is idle.
func (bt *batcher) settleLocked(k queueKey, q *queue, now time.Time) {
	switch {
	case len(q.pending) == 0:
		if q.timer != nil {
			q.timer.Stop()
			q.timer = nil
		}
		if q.inFlight == 0 && bt.queues[k] == q {
			delete(bt.queues, k)
		}
	case q.timer == nil && q.inFlight < maxWorkers:
		wait := bt.maxWait - now.Sub(q.pending[0].queued)
		q.timer = time.AfterFunc(max(wait, 0), func() { bt.expire(k, q) })
	}
}

// expire runs when q's oldest call has waited maxWait.
func (bt *batcher) expire(k queueKey, q *queue) {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	if bt.queues[k] != q { // idle and forgotten since; its Stop came too late
		return
	}
	q.timer = nil
	if bt.b.ctx.Err() != nil {
		bt.failLocked(k, q)
		return
	}
	bt.dispatchLocked(k, q, time.Now())
}

// failLocked fails every queued call of q: the backend is closed.
func (bt *batcher) failLocked(k queueKey, q *queue) {
	for _, c := range q.pending {
		c.done <- result{err: errClosed}
	}
	q.pending = nil
	bt.settleLocked(k, q, time.Time{})
}

// stop is called by Close after it has ended the backend's context and
// before it waits for the workers. Workers start under bt.mu only while the
// context is alive, so once stop has held bt.mu, every worker that will
// ever start has been added to the WaitGroup. Calls queued behind a batch
// in flight are failed by its worker when it returns; those waiting only
// for their timer are failed here.
func (bt *batcher) stop() {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	for k, q := range bt.queues {
		if q.timer != nil {
			q.timer.Stop()
			q.timer = nil
		}
		if q.inFlight == 0 {
			bt.failLocked(k, q)
		}
	}
}

// work sends batch, then, while what has queued meanwhile is due, the
// next batch. Once the backend is closed it fails what is queued instead.
func (bt *batcher) work(k queueKey, q *queue, batch []*call) {
	for {
		bt.send(k, batch)
		now := time.Now()
		bt.mu.Lock()
		q.inFlight--
		batch = nil
		if bt.b.ctx.Err() != nil {
			if q.inFlight == 0 {
				bt.failLocked(k, q)
			}
			bt.mu.Unlock()
			return
		}
		if bt.due(q, now) {
			if batch = bt.take(q); len(batch) > 0 {
				q.inFlight++
			}
		}
		bt.dispatchLocked(k, q, now) // full batches beyond this one, and the timer
		bt.mu.Unlock()
		if len(batch) == 0 {
			return
		}
	}
}

// send sends one batch and hands each caller its result.
func (bt *batcher) send(k queueKey, batch []*call) {
	if err := bt.b.checkOpen(); err != nil {
		for _, c := range batch {
			c.done <- result{err: err}
		}
		return
	}
	ctx, cancel := batchContext(bt.b.ctx, batch)
	ctx = traceBatch(ctx, batch)
	inputs := make([][]byte, len(batch))
	for i, c := range batch {
		inputs[i] = c.input
	}
	if bt.observe != nil {
		bt.observe(len(inputs))
	}
	sigs, errs, err := bt.b.signBatch(ctx, k.ring, k.version, inputs)
	cancel()
	if err != nil && bt.b.checkOpen() != nil {
		err = errClosed // Close ended the request
	}
	for i, c := range batch {
		switch {
		case err != nil:
			c.done <- result{err: err}
		default:
			c.done <- result{sig: sigs[i], err: errs[i]}
		}
	}
}

// batchContext lasts as long as the most patient caller in the batch, and
// no longer than the backend; each caller still stops waiting at its own
// deadline.
func batchContext(backend context.Context, batch []*call) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, c := range batch {
		dl, ok := c.ctx.Deadline()
		if !ok {
			return context.WithTimeout(backend, backends.BackgroundTimeout)
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return context.WithDeadline(backend, latest)
}

// traceBatch makes the Transit request of a batch part of its callers'
// traces: a child of the first caller's span (so a lone request's is simply
// its child), and, where the tracer provider records links, linked from
// the others.
func traceBatch(ctx context.Context, batch []*call) context.Context {
	first := trace.SpanContextFromContext(batch[0].ctx)
	if !first.IsValid() {
		return ctx
	}
	ctx = trace.ContextWithSpanContext(ctx, first)
	for _, c := range batch[1:] {
		if sc := trace.SpanContextFromContext(c.ctx); sc.IsValid() {
			trace.SpanFromContext(c.ctx).AddLink(trace.Link{SpanContext: first,
				Attributes: []attribute.KeyValue{attribute.String("signet.batched_with", "first caller of the Transit batch")}})
		}
	}
	return ctx
}
