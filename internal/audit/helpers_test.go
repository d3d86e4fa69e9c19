package audit_test

import (
	"github.com/impersonator/impersonator/internal/audit"
	"io"
	"log/slog"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var operator = audit.Actor{ID: "operator:alice"}
