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
// requests. A request that finds a free worker goes at once, so a lone Sign
// waits for nothing; while workers are busy, arrivals queue and leave
// together in the next batch (Transit answers a batch of 32 about as fast as
// a single signature).
type batcher struct {
	b      *Backend
	size   int
	mu     sync.Mutex
	queues map[queueKey]*queue
	// observe, when set (OpenOptions.OnBatch, or a test), sees the size of
	// every batch sent.
	observe func(size int)
}

// maxWorkers bounds the batch requests in flight per key version.
const maxWorkers = 4

type queueKey struct {
	ring    backends.KeyRing
	version int
}

type queue struct {
	pending []*call
	workers int
}

type call struct {
	ctx   context.Context
	input []byte
	done  chan result // buffered: the worker never blocks on a caller that left
}

type result struct {
	sig []byte
	err error
}

func newBatcher(b *Backend, size int) *batcher {
	return &batcher{b: b, size: size, queues: map[queueKey]*queue{}}
}

func (bt *batcher) sign(ctx context.Context, ring backends.KeyRing, version int, input []byte) ([]byte, error) {
	c := &call{ctx: ctx, input: input, done: make(chan result, 1)}
	k := queueKey{ring, version}
	bt.mu.Lock()
	q := bt.queues[k]
	if q == nil {
		q = &queue{}
		bt.queues[k] = q
	}
	if bt.b.ctx.Err() != nil { // closed since Sign checked; see stop
		bt.mu.Unlock()
		return nil, errClosed
	}
	q.pending = append(q.pending, c)
	if q.workers < maxWorkers {
		q.workers++
		bt.b.wg.Go(func() { bt.work(k, q) })
	}
	bt.mu.Unlock()
	select {
	case r := <-c.done:
		return r.sig, r.err
	case <-ctx.Done():
		return nil, classify(ctx.Err(), "signing")
	}
}

// stop is called by Close after it has ended the backend's context and
// before it waits for the workers. sign starts a worker under bt.mu only
// after seeing the context alive, so once stop has held bt.mu, every worker
// that will ever start has been added to the WaitGroup.
func (bt *batcher) stop() {
	bt.mu.Lock()
	defer bt.mu.Unlock()
}

// work sends batches until the queue is empty. Once the backend is closed it
// fails what is queued instead of sending it.
func (bt *batcher) work(k queueKey, q *queue) {
	for {
		bt.mu.Lock()
		var batch []*call
		for len(q.pending) > 0 && len(batch) < bt.size {
			c := q.pending[0]
			q.pending = q.pending[1:]
			if c.ctx.Err() == nil { // its caller has given up
				batch = append(batch, c)
			}
		}
		if len(batch) == 0 {
			q.workers--
			if q.workers == 0 {
				delete(bt.queues, k)
			}
			bt.mu.Unlock()
			return
		}
		bt.mu.Unlock()

		if err := bt.b.checkOpen(); err != nil {
			for _, c := range batch {
				c.done <- result{err: err}
			}
			continue
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
}

// batchContext lasts as long as the most patient caller in the batch, and
// no longer than the backend; each caller still stops waiting at its own
// deadline.
func batchContext(backend context.Context, batch []*call) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, c := range batch {
		dl, ok := c.ctx.Deadline()
		if !ok {
			return context.WithTimeout(backend, time.Minute)
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
