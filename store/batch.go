package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
)

// Statements of many rows: SQLite parses a statement each time it is not
// prepared, and for the multi-row statements of session ingest parsing
// showed in the profile. They are prepared once, at Open, for a fixed set
// of sizes, and used in transactions through tx.StmtContext.

// sqlChunk is the most rows, or IN values, one statement takes: well
// inside SQLite's limit on parameters.
const sqlChunk = 64

// Values is a statement over a list of rows of values — an INSERT of
// many rows, or an UPDATE … FROM (VALUES …) — prepared for 64, 32, 16 … 1
// rows: any number of rows is written with at most one statement per
// size.
type Values struct {
	cols  int
	stmts [7]*sql.Stmt // stmts[i] takes 1<<i rows
}

// PrepareInsert prepares head (`INSERT INTO t (a, b) VALUES `) for rows of
// cols values each.
func PrepareInsert(ctx context.Context, db *sql.DB, head string, cols int) (*Values, error) {
	return PrepareValues(ctx, db, head, cols, "")
}

// PrepareValues prepares head, the rows of cols parameters each, then tail.
func PrepareValues(ctx context.Context, db *sql.DB, head string, cols int, tail string) (*Values, error) {
	v := &Values{cols: cols}
	for i := range v.stmts {
		st, err := db.PrepareContext(ctx, head+placeholders(1<<i, cols)+tail)
		if err != nil {
			v.Close()
			return nil, err
		}
		v.stmts[i] = st
	}
	return v, nil
}

// Exec runs the statement in tx for the rows in args (cols values each,
// in order).
func (v *Values) Exec(ctx context.Context, tx *sql.Tx, args []any) error {
	if len(args)%v.cols != 0 {
		return errors.New("store: values: arguments are not whole rows")
	}
	for rows := len(args) / v.cols; rows > 0; {
		i := len(v.stmts) - 1
		for 1<<i > rows {
			i--
		}
		n := 1 << i
		if _, err := tx.StmtContext(ctx, v.stmts[i]).ExecContext(ctx, args[:n*v.cols]...); err != nil {
			return err
		}
		args, rows = args[n*v.cols:], rows-n
	}
	return nil
}

// Close releases the prepared statements.
func (v *Values) Close() error {
	var errs []error
	for _, st := range v.stmts {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

// placeholders returns rows groups of cols parameters: "(?, ?), (?, ?)".
func placeholders(rows, cols int) string {
	row := "(?" + strings.Repeat(", ?", cols-1) + ")"
	return row + strings.Repeat(", "+row, rows-1)
}

// InList is " IN (?, ?, …)" with as many parameters as EachIn passes.
var InList = " IN (?" + strings.Repeat(", ?", sqlChunk-1) + ")"

// EachIn calls fn with values in chunks of exactly sqlChunk, the last
// one padded with repeats of its last value (harmless in an IN list), so
// that one prepared statement serves every chunk.
func EachIn(values []any, fn func(chunk []any) error) error {
	for len(values) > 0 {
		n := min(sqlChunk, len(values))
		chunk := make([]any, sqlChunk)
		copy(chunk, values[:n])
		for i := n; i < sqlChunk; i++ {
			chunk[i] = values[n-1]
		}
		if err := fn(chunk); err != nil {
			return err
		}
		values = values[n:]
	}
	return nil
}
