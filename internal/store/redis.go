// Package store keeps everything impersonator must remember in Redis, its
// only system of record: single-use token ids and the audit stream, written
// together in atomic steps (Lua scripts, one round trip each).
package store

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Conn is an open connection to Redis, real or embedded.
type Conn struct {
	Client   redis.UniversalClient
	Embedded *miniredis.Miniredis // non-nil when REDIS_URL is empty
}

// Close closes the client and stops the embedded server, if any.
func (c *Conn) Close() error {
	err := c.Client.Close()
	if c.Embedded != nil {
		c.Embedded.Close()
	}
	return err
}

// Open connects to the Redis of rawURL. An empty URL starts an embedded,
// in-process Redis (miniredis) on a loopback port: it keeps nothing across
// restarts and is meant for development only.
//
// URL forms: redis://, rediss:// and unix:// for one node; a URL with a
// master_name parameter for Sentinel (sentinel addresses as the host and
// extra addr parameters); a URL with addr parameters and no master_name for
// Cluster (every addr a seed node).
func Open(rawURL string) (*Conn, error) {
	if rawURL == "" {
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("start embedded redis: %w", err)
		}
		return &Conn{Client: redis.NewClient(&redis.Options{Addr: m.Addr()}), Embedded: m}, nil
	}
	client, err := newClient(rawURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %s", redactURLError(err, rawURL))
	}
	return &Conn{Client: client}, nil
}

func newClient(rawURL string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	switch {
	case q.Has("master_name"):
		o, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, err
		}
		return redis.NewFailoverClient(o), nil
	case q.Has("addr"):
		o, err := redis.ParseClusterURL(rawURL)
		if err != nil {
			return nil, err
		}
		return redis.NewClusterClient(o), nil
	}
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(o), nil
}

// ValidateURL reports whether rawURL is a Redis URL this service can use,
// without connecting.
func ValidateURL(rawURL string) error {
	if rawURL == "" {
		return nil
	}
	c, err := newClient(rawURL)
	if err != nil {
		return errors.New(redactURLError(err, rawURL))
	}
	return c.Close()
}

// redactURLError keeps a password in the URL out of error messages.
func redactURLError(err error, rawURL string) string {
	msg := err.Error()
	if u, perr := url.Parse(rawURL); perr == nil && u.User != nil {
		if p, ok := u.User.Password(); ok && p != "" {
			msg = strings.ReplaceAll(msg, p, "xxxxx")
		}
	}
	return msg
}

// Persistence describes whether the connected Redis keeps data on disk.
type Persistence struct {
	Known bool // false when the server does not let us ask (CONFIG disabled)
	AOF   bool
	RDB   bool
}

// Durable reports whether the server persists anything.
func (p Persistence) Durable() bool { return p.AOF || p.RDB }

// CheckPersistence asks the server (CONFIG GET) whether it writes to disk.
func CheckPersistence(ctx context.Context, c redis.UniversalClient) Persistence {
	aof, err := c.ConfigGet(ctx, "appendonly").Result()
	if err != nil {
		return Persistence{}
	}
	save, err := c.ConfigGet(ctx, "save").Result()
	if err != nil {
		return Persistence{}
	}
	return Persistence{Known: true, AOF: aof["appendonly"] == "yes", RDB: strings.TrimSpace(save["save"]) != ""}
}
