package store

import (
	"context"
	"database/sql"
)

// Tx is one write transaction of the store. Operations that must commit
// together (a change and its audit row, a record and its ledger entry)
// take a *Tx; callers compose them in DB.Update and never see SQL.
type Tx struct{ tx *sql.Tx }

// Update runs fn in a write transaction, committing if it returns nil.
// Write transactions take turns: one at a time writes.
func (db *DB) Update(ctx context.Context, fn func(*Tx) error) error {
	return db.write(ctx, func(tx *sql.Tx) error { return fn(&Tx{tx: tx}) })
}

// SQL is the transaction underneath, for package ledger only until its
// statements move into this package (issue 11); nothing else may call it.
func (t *Tx) SQL() *sql.Tx { return t.tx }
