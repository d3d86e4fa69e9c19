package store

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// deadlineScripter makes a Scripter answer by its caller's context deadline.
// go-redis's autopipeliner waits for its batch whatever the caller's context
// says, on its own read and pool timeouts (12 s measured with Redis frozen
// by SIGSTOP), so a session check bounded at 3 s answered after 12. The
// command still runs to its end (or go-redis's timeout) in the background;
// the caller answers 503 at its deadline, failing closed, as it would for
// any Redis error.
type deadlineScripter struct{ redis.Scripter }

// bounded runs call and returns its command, or, when ctx ends first, a
// command carrying ctx's error.
func bounded(ctx context.Context, call func() *redis.Cmd) *redis.Cmd {
	if ctx.Done() == nil {
		return call()
	}
	done := make(chan *redis.Cmd, 1)
	go func() { done <- call() }()
	select {
	case c := <-done:
		return c
	case <-ctx.Done():
		c := redis.NewCmd(ctx)
		c.SetErr(ctx.Err())
		return c
	}
}

func (d deadlineScripter) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return bounded(ctx, func() *redis.Cmd { return d.Scripter.EvalSha(ctx, sha1, keys, args...) })
}

func (d deadlineScripter) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return bounded(ctx, func() *redis.Cmd { return d.Scripter.Eval(ctx, script, keys, args...) })
}
