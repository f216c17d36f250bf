package incident

import "fmt"

// Type is the number of a reportable incident type in Annexure I of the
// CERT-In Directions of 28 April 2022: 1 to 20, in the official order.
type Type int

// types holds Annexure I in the official order and wording; types[n-1] is
// type n.
var types = [...]string{
	"Targeted scanning/probing of critical networks/systems",
	"Compromise of critical systems/information",
	"Unauthorised access of IT systems/data",
	"Defacement of website or intrusion into a website (e.g. inserted malicious code, links)",
	"Malicious code attacks (virus, worm, Trojan, bots, spyware, ransomware, cryptominers)",
	"Attacks on servers (database, mail, DNS) and network devices (routers)",
	"Identity theft, spoofing and phishing attacks",
	"Denial of Service (DoS) and Distributed Denial of Service (DDoS) attacks",
	"Attacks on critical infrastructure, SCADA and operational technology systems, and wireless networks",
	"Attacks on applications such as e-governance and e-commerce",
	"Data breach",
	"Data leak",
	"Attacks on Internet of Things (IoT) devices and associated systems, networks, software, servers",
	"Attacks or incidents affecting digital payment systems",
	"Attacks through malicious mobile apps",
	"Fake mobile apps",
	"Unauthorised access to social media accounts",
	"Attacks or malicious/suspicious activity affecting cloud computing systems/servers/software/applications",
	"Attacks or malicious/suspicious activity affecting systems related to Big Data, blockchain, virtual assets, virtual asset exchanges, custodian wallets, robotics, 3D and 4D printing, additive manufacturing, drones",
	"Attacks or malicious/suspicious activity affecting systems related to artificial intelligence and machine learning",
}

// Types returns the 20 types of Annexure I in the official order.
func Types() []Type {
	out := make([]Type, len(types))
	for i := range types {
		out[i] = Type(i + 1)
	}
	return out
}

// ParseType checks that n is an Annexure I type number.
func ParseType(n int) (Type, error) {
	if n < 1 || n > len(types) {
		return 0, fmt.Errorf("unknown incident type %d: Annexure I lists types 1 to %d ('meridian incident types' prints them)", n, len(types))
	}
	return Type(n), nil
}

// Name is the type's official wording, or "" for a number outside 1-20.
func (t Type) Name() string {
	if t < 1 || int(t) > len(types) {
		return ""
	}
	return types[t-1]
}

// String is "8. Denial of Service (DoS) ...".
func (t Type) String() string { return fmt.Sprintf("%d. %s", int(t), t.Name()) }
