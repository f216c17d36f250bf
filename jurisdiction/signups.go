package jurisdiction

import (
	"fmt"
	"time"
)

// UnconfirmedSignups says, for people, what becomes of self-service
// sign-ups that never became subscribers where d, a subscriber-records
// duty, applies: withdrawn and purged after window, or kept when window
// is 0 (expiry off).
//
// The choice: the duty (CERT-In direction (v)) keeps the records of
// subscribers hiring the service for its retention after the registration
// is cancelled or withdrawn. A sign-up that neither verified its email nor
// got a device hired nothing (no period of hire, no address allotted, no
// session), so it made no subscriber; its unverified details may well be a
// third party's, and keeping them for years would serve no duty.
func UnconfirmedSignups(d Duty, window time.Duration) string {
	if window <= 0 {
		return fmt.Sprintf("Self-service sign-ups never verified nor used are kept like any registration (sign-up expiry is off): their records stay %s after cancellation.\n", plural(d.RetentionYears, "year"))
	}
	return fmt.Sprintf("Self-service sign-ups that never verified their email nor got a device within %s are withdrawn and purged, record and all (the ledger keeps a purge entry of counts): "+
		"%s keeps the records of subscribers hiring the service %s after their registration ends, and such a sign-up hired nothing (no period of hire, no address allotted, no session), "+
		"so it made no subscriber, and its unverified details may be a third party's.\n", human(window), d.Why, plural(d.RetentionYears, "year"))
}
