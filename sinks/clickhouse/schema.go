// Package clickhouse stores the pipeline's output in ClickHouse: the schema
// (versioned migrations embedded in the binary) and, with issue 4, the sink
// that fills it. Everything is written to run on ClickHouse 18.16 (Debian's
// package, used by the tests) and on current releases.
package clickhouse

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one schema step: NNN_name.sql holding one statement.
type Migration struct {
	Version uint32
	Name    string
	SQL     string
}

// Migrations lists the embedded migrations in version order.
func Migrations() ([]Migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]Migration, 0, len(names))
	for _, path := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(path, "migrations/"), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must be NNN_name.sql", path)
		}
		b, err := migrationFiles.ReadFile(path)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: uint32(v), Name: name, SQL: string(b)})
	}
	return out, nil
}

const migrationsTable = `CREATE TABLE IF NOT EXISTS walletsync_migrations (
    version    UInt32,
    name       String,
    applied_at DateTime
) ENGINE = ReplacingMergeTree() ORDER BY version`

// record notes an applied migration. A batch, not INSERT … VALUES through
// Exec: over the native protocol ClickHouse 18.16 waits for a data block
// after such a statement and never answers.
func record(ctx context.Context, conn driver.Conn, m Migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO walletsync_migrations (version, name, applied_at)")
	if err != nil {
		return err
	}
	if err := b.Append(m.Version, m.Name, time.Now()); err != nil {
		return err
	}
	return b.Send()
}

// Migrate applies the migrations the database lacks and returns their names.
// It is idempotent and safe to run from several processes at once: every
// statement is CREATE … IF NOT EXISTS or an ALTER … ADD COLUMN whose "column
// already exists" counts as applied, and the bookkeeping table collapses
// duplicate rows, so a migration recorded twice or applied again is harmless.
func Migrate(ctx context.Context, conn driver.Conn) ([]string, error) {
	if err := conn.Exec(ctx, migrationsTable); err != nil {
		return nil, fmt.Errorf("creating walletsync_migrations: %w", err)
	}
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM walletsync_migrations")
	if err != nil {
		return nil, fmt.Errorf("reading applied migrations: %w", err)
	}
	applied := map[uint32]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, err
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	ms, err := Migrations()
	if err != nil {
		return nil, err
	}
	var done []string
	for _, m := range ms {
		if applied[m.Version] {
			continue
		}
		if err := conn.Exec(ctx, m.SQL); err != nil && !alreadyAdded(m, err) {
			return done, fmt.Errorf("migration %03d_%s: %w", m.Version, m.Name, err)
		}
		if err := record(ctx, conn, m); err != nil {
			return done, fmt.Errorf("recording migration %03d_%s: %w", m.Version, m.Name, err)
		}
		done = append(done, fmt.Sprintf("%03d_%s", m.Version, m.Name))
	}
	return done, nil
}

// alreadyAdded reports the error of an ALTER … ADD COLUMN that another
// migrator applied first (code 44, "column with this name already
// exists"; one ALTER's columns are added together or not at all).
func alreadyAdded(m Migration, err error) bool {
	var ex *proto.Exception
	return strings.HasPrefix(strings.TrimSpace(stripComments(m.SQL)), "ALTER TABLE") &&
		errors.As(err, &ex) && ex.Code == 44 && strings.Contains(ex.Message, "already exists")
}

func stripComments(sql string) string {
	var b strings.Builder
	for _, l := range strings.Split(sql, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			b.WriteString(l)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
