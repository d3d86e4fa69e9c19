package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// MaxmemoryPolicy returns the connected Redis's maxmemory-policy, read from
// INFO memory (which managed services that disable CONFIG still answer),
// else from CONFIG GET. On a Cluster it asks every primary and returns the
// first policy other than noeviction, if any.
func (s *Store) MaxmemoryPolicy(ctx context.Context) (string, error) {
	if c, ok := s.rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		policy := ""
		err := c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			p, err := maxmemoryPolicy(ctx, n)
			mu.Lock()
			defer mu.Unlock()
			if err == nil && (policy == "" || policy == "noeviction") {
				policy = p
			}
			return err
		})
		return policy, err
	}
	return maxmemoryPolicy(ctx, s.rdb)
}

func maxmemoryPolicy(ctx context.Context, c redis.Cmdable) (string, error) {
	info, ierr := c.Info(ctx, "memory").Result()
	if ierr == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "maxmemory_policy:"); ok {
				return v, nil
			}
		}
		ierr = errors.New("INFO memory has no maxmemory_policy")
	}
	cfg, cerr := c.ConfigGet(ctx, "maxmemory-policy").Result()
	if cerr == nil {
		if v, ok := cfg["maxmemory-policy"]; ok {
			return v, nil
		}
		cerr = errors.New("CONFIG GET maxmemory-policy answered nothing")
	}
	return "", fmt.Errorf("cannot read maxmemory-policy: INFO memory: %v; CONFIG GET: %v", ierr, cerr)
}
