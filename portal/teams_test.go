package portal

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestTeamsOfAVisitor: a visitor's teams are the operator's teams that
// list them and their identity provider's groups (those of team_groups,
// when set), bounded in number and in name; other groups are ignored.
func TestTeamsOfAVisitor(t *testing.T) {
	p := Policy{Teams: []Team{{"ops", []string{"bob", "carol"}}, {"sre", []string{"carol"}}}}
	for _, c := range []struct {
		user, groups string
		want         []string
	}{
		{"alice", "", nil},
		{"alice", "ml", []string{"ml"}},
		{"bob", " research, ml\tml ,,", []string{"ml", "ops", "research"}},
		{"carol", "ops", []string{"ops", "sre"}},
		// Names with spaces split; names of other characters or too long
		// are not teams.
		{"alice", "a b;c " + strings.Repeat("x", 65) + " /eng/ml org:team", []string{"/eng/ml", "a", "org:team"}},
	} {
		if got := p.teamsOf(c.user, c.groups); !slices.Equal(got, c.want) {
			t.Errorf("teamsOf(%q, %q) = %q, want %q", c.user, c.groups, got, c.want)
		}
	}
	var many []string
	for i := range 200 {
		many = append(many, fmt.Sprintf("g%03d", i))
	}
	if got := p.teamsOf("alice", strings.Join(many, ",")); len(got) != MaxTeams || got[0] != "g000" {
		t.Errorf("200 groups make %d teams (first %q), want the first %d", len(got), got[0], MaxTeams)
	}
	// A group named as an operator's team does not join it: its members
	// are the operator's list (mallory's group ops is not the team ops).
	if got := p.teamsOf("mallory", "ops,sre,ml"); !slices.Equal(got, []string{"ml"}) {
		t.Errorf("mallory's groups ops,sre,ml make the teams %q, want [ml]: the operator's teams are theirs to fill", got)
	}
	// team_groups: only these groups count.
	p.TeamGroups = []string{"ml"}
	if got := p.teamsOf("bob", "research,ml"); !slices.Equal(got, []string{"ml", "ops"}) {
		t.Errorf("with team_groups ml, bob's teams are %q, want [ml ops]", got)
	}
}
