package egress

import "testing"

// The lookups pick the most specific row with a strict comparison of prefix
// lengths (match, compile). scripts/mutation.sh reports that turning those
// comparisons into >= changes nothing, which holds only while no prefix has
// two rows: then the first or last of them would decide depending on the
// table's order. This pins that precondition.
func TestNoPrefixHasTwoRows(t *testing.T) {
	seen := make(map[string]string, len(table))
	for _, r := range table {
		k := r.Prefix.Masked().String()
		if prev, dup := seen[k]; dup {
			t.Errorf("%s has two rows: %q and %q", k, prev, r.Name)
		}
		seen[k] = r.Name
		if r.Prefix != r.Prefix.Masked() {
			t.Errorf("row %q: prefix %s has host bits set", r.Name, r.Prefix)
		}
	}
}
