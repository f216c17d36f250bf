package store

import (
	"context"
	"database/sql"
	"slices"
	"testing"
)

// Insert takes any number of rows, each exactly once and in order, and
// EachIn visits every value.
func TestInsertAnyNumberOfRows(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t)
	if _, err := db.Exec(`CREATE TABLE rows_test (n INTEGER NOT NULL, sq INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	in, err := PrepareInsert(ctx, db.DB, `INSERT INTO rows_test (n, sq) VALUES `, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	for _, rows := range []int{0, 1, 63, 64, 65, 200} {
		db.Exec(`DELETE FROM rows_test`)
		var args []any
		for i := range rows {
			args = append(args, i, i*i)
		}
		if err := db.write(ctx, func(tx *sql.Tx) error { return in.Exec(ctx, tx, args) }); err != nil {
			t.Fatalf("%d rows: %v", rows, err)
		}
		var n, bad int
		var sum sql.NullInt64
		db.QueryRow(`SELECT count(*), sum(n), count(*) FILTER (WHERE sq <> n*n OR rowid <> n+1) FROM rows_test`).Scan(&n, &sum, &bad)
		if n != rows || sum.Int64 != int64(rows*(rows-1)/2) || bad != 0 {
			t.Errorf("%d rows inserted as %d (sum %d, %d out of place)", rows, n, sum.Int64, bad)
		}
		var seen []any
		EachIn(args, func(chunk []any) error {
			if len(chunk) != sqlChunk {
				t.Errorf("a chunk of %d values", len(chunk))
			}
			seen = append(seen, chunk...)
			return nil
		})
		for _, v := range args {
			if !slices.Contains(seen, v) {
				t.Errorf("EachIn lost value %v", v)
			}
		}
	}
	if err := db.write(ctx, func(tx *sql.Tx) error { return in.Exec(ctx, tx, []any{1}) }); err == nil {
		t.Error("half a row was inserted")
	}
}

// Values with a tail runs UPDATE … FROM (VALUES …) for any number of rows.
func TestValuesUpdateFrom(t *testing.T) {
	ctx := context.Background()
	db, _ := openTest(t)
	if _, err := db.Exec(`CREATE TABLE rows_test (n INTEGER PRIMARY KEY, sq INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for n := range 100 {
		db.Exec(`INSERT INTO rows_test (n) VALUES (?)`, n)
	}
	up, err := PrepareValues(ctx, db.DB, `UPDATE rows_test SET sq = v.column2 FROM (VALUES `, 2, `) AS v WHERE rows_test.n = v.column1`)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	var args []any
	for n := 10; n < 87; n++ { // 77 rows: statements of 64, 8, 4 and 1
		args = append(args, n, n*n)
	}
	if err := db.write(ctx, func(tx *sql.Tx) error { return up.Exec(ctx, tx, args) }); err != nil {
		t.Fatal(err)
	}
	var set, wrong int
	db.QueryRow(`SELECT count(sq), count(*) FILTER (WHERE sq IS NOT NULL AND (sq <> n*n OR n < 10 OR n >= 87)) FROM rows_test`).Scan(&set, &wrong)
	if set != 77 || wrong != 0 {
		t.Errorf("%d rows updated, %d wrongly", set, wrong)
	}
}
