package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"io"
	"strings"
	"testing"

	"github.com/impersonator/impersonator/internal/audit"
	"github.com/impersonator/impersonator/internal/redistest"
	"github.com/impersonator/impersonator/internal/store"
)

// TestOutputIsSafe: what an event holds cannot drive the operator's
// terminal (escape sequences, forged rows) or a spreadsheet (formulas):
// audit list escapes every non-printable character in its table and
// neutralises formula cells in its CSV.
func TestOutputIsSafe(t *testing.T) {
	srv := redistest.StartServer(t)
	st, err := store.Open(srv.URL(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ev, err := audit.Encoder{}.Encode(audit.Event{Type: audit.Denied, Actor: audit.Actor{ID: "1", Email: "=HYPERLINK(\"http://evil\")"},
		Subject: audit.Subject{Collection: "users", ID: "42"},
		Reason:  "ticket\x1b[2J\x1b[H hidden\n2026-01-01T00:00:00Z  impersonation.minted  forged", Detail: "+cmd|' /C calc'!A0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Append(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	cli := env(map[string]string{"REDIS_URL": srv.URL()})
	var table bytes.Buffer
	if err := run(context.Background(), []string{"audit", "list"}, cli, &table, io.Discard); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(table.String(), "\x1b") || strings.Count(table.String(), "\n") != 2 {
		t.Errorf("table holds raw escapes or a forged row:\n%q", table.String())
	}
	if !strings.Contains(table.String(), `\x1b[2J`) {
		t.Errorf("table does not show the escape, escaped:\n%s", table.String())
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"audit", "list", "--format", "csv"}, cli, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&out).ReadAll()
	if err != nil || len(rows) != 2 {
		t.Fatalf("csv = %v, %v", rows, err)
	}
	for _, cell := range rows[1] {
		if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
			t.Errorf("csv cell %q starts a formula", cell)
		}
	}
}
