package incident

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// DefaultPOCRecipient is where the point of contact's details go unless a
// duty names another address.
const DefaultPOCRecipient = "info@cert-in.org.in"

// PointOfContact is the person designated to interface with CERT-In
// (direction (iii)), with the fields of the Annexure II format.
type PointOfContact struct {
	Organisation string    `json:"organisation"`
	Name         string    `json:"name"`
	Designation  string    `json:"designation"`
	Address      string    `json:"address"` // office address
	Email        string    `json:"email"`
	Mobile       string    `json:"mobile"`
	Phone        string    `json:"phone,omitempty"` // office telephone
	Fax          string    `json:"fax,omitempty"`
	UpdatedAt    time.Time `json:"updated_at,omitzero"`
}

// annexureII lists the letter's fields in the Annexure II order.
func (p PointOfContact) annexureII() [][2]string {
	return [][2]string{
		{"Name of the organisation", p.Organisation},
		{"Name of the Point of Contact", p.Name},
		{"Designation", p.Designation},
		{"Office address", p.Address},
		{"Email", p.Email},
		{"Mobile", p.Mobile},
		{"Office phone", p.Phone},
		{"Fax", p.Fax},
	}
}

// Check trims and validates p: everything but the office phone and fax is
// required.
func (p *PointOfContact) Check() error {
	var missing []string
	for _, t := range []struct {
		field    string
		v        *string
		max      int
		optional bool
	}{
		{"organisation", &p.Organisation, MaxShort, false}, {"name", &p.Name, MaxShort, false},
		{"designation", &p.Designation, MaxShort, false}, {"address", &p.Address, MaxLong, false},
		{"email", &p.Email, MaxShort, false}, {"mobile", &p.Mobile, MaxShort, false},
		{"phone", &p.Phone, MaxShort, true}, {"fax", &p.Fax, MaxShort, true},
	} {
		if err := CheckText(t.field, t.v, t.max); err != nil {
			return err
		}
		if *t.v == "" && !t.optional {
			missing = append(missing, t.field)
		}
	}
	if len(missing) > 0 {
		return &FieldError{Field: strings.Join(missing, ", "), Msg: "required"}
	}
	return errors.Join(checkEmail("email", p.Email), checkPhone("mobile", p.Mobile), checkPhone("phone", p.Phone), checkPhone("fax", p.Fax))
}

// Letter is a message ready to send.
type Letter struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
	Body    string `json:"body"`
}

// Letter renders the notification of the point of contact to CERT-In, in
// the Annexure II format.
func (p PointOfContact) Letter(to string, now time.Time) Letter {
	var b strings.Builder
	b.WriteString("To: Indian Computer Emergency Response Team (CERT-In)\n\n")
	fmt.Fprintf(&b, "In accordance with direction (iii) of the CERT-In Directions No. 20(3)/2022-CERT-In of 28 April 2022, %s designates the following Point of Contact to interface with CERT-In. All communications from CERT-In may be addressed to this Point of Contact.\n\n", p.Organisation)
	b.WriteString("Details of the Point of Contact (Annexure II)\n")
	for i, f := range p.annexureII() {
		v := f[1]
		if v == "" {
			v = "none"
		}
		fmt.Fprintf(&b, "%d. %s: %s\n", i+1, f[0], strings.ReplaceAll(v, "\n", "\n   "))
	}
	fmt.Fprintf(&b, "\nDate: %s\n\n%s\n%s, %s\n", now.UTC().Format("2 January 2006"), p.Name, p.Designation, p.Organisation)
	return Letter{To: to, Subject: "Point of Contact for CERT-In: " + p.Organisation, Body: b.String()}
}
