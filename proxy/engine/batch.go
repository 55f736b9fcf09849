package engine

import (
	"context"
	"slices"
	"sync"

	"github.com/phantomvault/phantom/internal/resolve"
)

const (
	// maxBatch bounds the requests in one Vault call (the engine takes 256).
	maxBatch = 128
	// maxQueued bounds the requests waiting for Vault. Past it a request is
	// shed at once: a flood (of forged tokens, say) must not grow memory
	// and latency for everyone without limit.
	maxQueued = 4096
)

// batcher coalesces concurrent resolves into fewer Vault calls. At most
// maxInFlight calls run at once; a request that finds a free slot is sent at
// once, alone, so an idle proxy adds no wait. Requests that arrive while
// every slot is busy queue up, and the next slot to free takes all of them
// as one call. Each request still gets its own decision, made by the engine
// after the request arrived: batching changes what a call costs Vault, not
// what it decides.
//
// The forward listener's CONNECT checks (checkTunnel) take the same slots
// and the same queue, so -vault-concurrency bounds every call a client can
// cause, and a flood of CONNECTs is shed like a flood of requests. The
// engine's tunnel path takes one check per call: a slot that takes a batch
// sends its resolves as one call and then each distinct check once (checks
// alike in every field, queued together, share one answer, made after each
// of them arrived).
type batcher struct {
	vault       engineCalls
	maxInFlight int
	metrics     Metrics // each call's size; nil in tests

	mu       sync.Mutex
	inFlight int
	queue    []*queued
	drains   int        // goroutines sending queued batches (drain)
	drained  *sync.Cond // on mu: signalled when drains falls to zero
}

// engineCalls are the Vault calls the batcher makes: one for several
// requests, and one for one CONNECT check. Outside tests,
// Vault.resolveMany and Vault.checkTunnelOnce.
type engineCalls interface {
	resolveMany(ctx context.Context, reqs []resolve.Request) ([]*Decision, error)
	checkTunnelOnce(ctx context.Context, req resolve.TunnelRequest) (*resolve.TunnelAnswer, error)
}

func newBatcher(vault engineCalls, maxInFlight int, m Metrics) *batcher {
	b := &batcher{vault: vault, maxInFlight: maxInFlight, metrics: m}
	b.drained = sync.NewCond(&b.mu)
	return b
}

// queued is one resolve (req) or one CONNECT check (tun) and, once done is
// closed, its answer.
type queued struct {
	req  resolve.Request
	tun  *resolve.TunnelRequest
	done chan struct{}
	d    *Decision
	ta   *resolve.TunnelAnswer
	err  error
}

func (b *batcher) resolve(ctx context.Context, req resolve.Request) (*Decision, error) {
	q := &queued{req: req}
	if err := b.do(ctx, q); err != nil {
		return nil, err
	}
	return q.d, nil
}

// checkTunnel asks the engine about one CONNECT, within the resolves'
// bound on calls in flight and their queue.
func (b *batcher) checkTunnel(ctx context.Context, req resolve.TunnelRequest) (*resolve.TunnelAnswer, error) {
	q := &queued{tun: &req}
	if err := b.do(ctx, q); err != nil {
		return nil, err
	}
	return q.ta, nil
}

// do sends q at once, alone, if a slot is free, or queues it for the next
// slot to free; ErrOverloaded when the queue is full.
func (b *batcher) do(ctx context.Context, q *queued) error {
	b.mu.Lock()
	if b.inFlight < b.maxInFlight {
		b.inFlight++
		b.mu.Unlock()
		b.sendAll(ctx, []*queued{q})
		b.release()
		return q.err
	}
	if len(b.queue) >= maxQueued {
		b.mu.Unlock()
		return ErrOverloaded
	}
	q.done = make(chan struct{})
	b.queue = append(b.queue, q)
	b.mu.Unlock()
	select {
	case <-q.done:
		return q.err
	case <-ctx.Done():
		// Leave the queue if still in it; if a call already carries this
		// request, its decision is dropped. Nothing is forwarded either way.
		b.mu.Lock()
		if i := slices.Index(b.queue, q); i >= 0 {
			b.queue = slices.Delete(b.queue, i, i+1)
		}
		b.mu.Unlock()
		return ctx.Err()
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
		// Not any one request's context: the others still want the answer.
		b.sendAll(context.Background(), batch)
		for _, q := range batch {
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

// sendAll answers every entry of batch, one after the other on the caller's
// slot: its resolves in one call, then each distinct CONNECT check in one.
func (b *batcher) sendAll(ctx context.Context, batch []*queued) {
	var reqs []resolve.Request
	var resolves []*queued
	var checks []*queued // the first of each distinct check
	same := map[resolve.TunnelRequest][]*queued{}
	for _, q := range batch {
		if q.tun == nil {
			reqs = append(reqs, q.req)
			resolves = append(resolves, q)
			continue
		}
		if _, ok := same[*q.tun]; !ok {
			checks = append(checks, q)
		}
		same[*q.tun] = append(same[*q.tun], q)
	}
	if len(reqs) > 0 {
		ds, err := b.send(ctx, reqs)
		for i, q := range resolves {
			if err != nil {
				q.err = err
			} else {
				q.d = ds[i]
			}
		}
	}
	for _, c := range checks {
		a, err := b.vault.checkTunnelOnce(ctx, *c.tun)
		for _, q := range same[*c.tun] {
			q.ta, q.err = a, err
		}
	}
}

func (b *batcher) send(ctx context.Context, reqs []resolve.Request) ([]*Decision, error) {
	if b.metrics != nil {
		b.metrics.BatchSize(len(reqs))
	}
	return b.vault.resolveMany(ctx, reqs)
}
