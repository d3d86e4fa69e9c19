package main

import (
	"context"
	"errors"
	"time"

	"github.com/impersonator/impersonator/internal/store"
)

// openStore connects an operator command (audit, sessions) straight to the
// service's Redis, the system of record, with the same REDIS_URL as serve.
// The embedded Redis lives inside a serve process and cannot be reached.
func openStore(ctx context.Context, getenv func(string) string) (*store.Store, func(), error) {
	url := getenv("REDIS_URL")
	if url == "" {
		return nil, nil, errors.New("REDIS_URL is not set: this command reads the service's Redis directly (the embedded development Redis lives inside `serve` and cannot be reached)")
	}
	conn, err := store.Open(url)
	if err != nil {
		return nil, nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := conn.Client.Ping(pctx).Err(); err != nil {
		conn.Close()
		return nil, nil, err
	}
	return store.New(conn.Client, store.Options{}), func() { conn.Close() }, nil
}
