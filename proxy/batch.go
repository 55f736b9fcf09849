package proxy

import (
	"context"
	"errors"
	"slices"
	"sync"
)

const (
	// maxBatch bounds the requests in one Vault call (the engine takes 256).
	maxBatch = 128
	// maxQueued bounds the requests waiting for Vault. Past it a request is
	// shed at once: a flood (of forged tokens, say) must not grow memory
	// and latency for everyone without limit.
	maxQueued = 4096
)

// errOverloaded sheds a request when too many already wait for Vault.
var errOverloaded = errors.New("too many requests are waiting for Vault")

// batcher coalesces concurrent resolves into fewer Vault calls. At most
// maxInFlight calls run at once; a request that finds a free slot is sent at
// once, alone, so an idle proxy adds no wait. Requests that arrive while
// every slot is busy queue up, and the next slot to free takes all of them
// as one call. Each request still gets its own decision, made by the engine
// after the request arrived: batching changes what a call costs Vault, not
// what it decides.
type batcher struct {
	vault       manyResolver
	maxInFlight int
	metrics     *Metrics // each call's size; nil in tests

	mu       sync.Mutex
	inFlight int
	queue    []*queued
	drains   int        // goroutines sending queued batches (drain)
	drained  *sync.Cond // on mu: signalled when drains falls to zero
}

// manyResolver makes one Vault call for several requests: outside tests,
// VaultResolver.resolveMany.
type manyResolver interface {
	resolveMany(ctx context.Context, reqs []ResolveRequest) ([]*Decision, error)
}

func newBatcher(vault manyResolver, maxInFlight int, m *Metrics) *batcher {
	b := &batcher{vault: vault, maxInFlight: maxInFlight, metrics: m}
	b.drained = sync.NewCond(&b.mu)
	return b
}

type queued struct {
	req  ResolveRequest
	done chan struct{}
	d    *Decision
	err  error
}

func (b *batcher) resolve(ctx context.Context, req ResolveRequest) (*Decision, error) {
	b.mu.Lock()
	if b.inFlight < b.maxInFlight {
		b.inFlight++
		b.mu.Unlock()
		ds, err := b.send(ctx, []ResolveRequest{req})
		b.release()
		if err != nil {
			return nil, err
		}
		return ds[0], nil
	}
	if len(b.queue) >= maxQueued {
		b.mu.Unlock()
		return nil, errOverloaded
	}
	q := &queued{req: req, done: make(chan struct{})}
	b.queue = append(b.queue, q)
	b.mu.Unlock()
	select {
	case <-q.done:
		return q.d, q.err
	case <-ctx.Done():
		// Leave the queue if still in it; if a call already carries this
		// request, its decision is dropped. Nothing is forwarded either way.
		b.mu.Lock()
		if i := slices.Index(b.queue, q); i >= 0 {
			b.queue = slices.Delete(b.queue, i, i+1)
		}
		b.mu.Unlock()
		return nil, ctx.Err()
	}
}

// release hands the caller's slot to the queue, if anything waits there.
func (b *batcher) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.inFlight--
		return
	}
	b.drains++
	go b.drain(b.takeLocked())
}

// wait returns once no goroutine is sending queued batches. On shutdown,
// with no request left to queue, that is for good.
func (b *batcher) wait() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.drains > 0 {
		b.drained.Wait()
	}
}

// drain sends batches with the slot it holds until the queue is empty, then
// gives up the slot and ends (see wait).
func (b *batcher) drain(batch []*queued) {
	for {
		reqs := make([]ResolveRequest, len(batch))
		for i, q := range batch {
			reqs[i] = q.req
		}
		// Not any one request's context: the others still want the answer.
		ds, err := b.send(context.Background(), reqs)
		for i, q := range batch {
			if err != nil {
				q.err = err
			} else {
				q.d = ds[i]
			}
			close(q.done)
		}
		b.mu.Lock()
		if len(b.queue) == 0 {
			b.inFlight--
			if b.drains--; b.drains == 0 {
				b.drained.Broadcast()
			}
			b.mu.Unlock()
			return
		}
		batch = b.takeLocked()
		b.mu.Unlock()
	}
}

func (b *batcher) takeLocked() []*queued {
	n := min(len(b.queue), maxBatch)
	batch := b.queue[:n:n]
	b.queue = b.queue[n:]
	if len(b.queue) == 0 {
		b.queue = nil // let the old array go
	}
	return batch
}

func (b *batcher) send(ctx context.Context, reqs []ResolveRequest) ([]*Decision, error) {
	if b.metrics != nil {
		b.metrics.resolveBatch(len(reqs))
	}
	return b.vault.resolveMany(ctx, reqs)
}
