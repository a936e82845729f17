package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
)

// chain writes entries as the writers do: each line a JSON object whose
// "prev" is the SHA-256 of the line before (Genesis for the first). It is
// written here again, so that the oracle does not share Append's code.
func chain(t *testing.T, entries []Entry) (log []byte, head string) {
	prev := Genesis
	var buf bytes.Buffer
	for _, e := range entries {
		e["prev"] = prev
		line, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
		sum := sha256.Sum256(line)
		prev = hex.EncodeToString(sum[:])
	}
	return buf.Bytes(), prev
}

// fuzzEntries turns each line of s into an entry: the line's JSON object
// when it is one, else {"event": line}.
func fuzzEntries(s string) []Entry {
	var entries []Entry
	for _, line := range strings.Split(s, "\n") {
		if line == "" {
			continue
		}
		e := Entry{}
		if json.Unmarshal([]byte(line), &e) != nil || e == nil {
			e = Entry{"event": line}
		}
		if e["event"] == EventTruncated { // fails verification by design
			delete(e, "event")
		}
		entries = append(entries, e)
	}
	return entries
}

// alter changes log: op picks flipping bits of one byte, cutting bytes out,
// putting bytes in, cutting at a line boundary, or swapping, repeating or
// dropping a line.
func alter(log []byte, op uint8, pos uint32, n uint16, data []byte) []byte {
	out := append([]byte(nil), log...)
	if len(out) == 0 {
		return append(out, data...)
	}
	i := int(pos % uint32(len(out)))
	lines := bytes.SplitAfter(out, []byte("\n"))
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	l := int(pos % uint32(len(lines)))
	m := int(uint32(n) % uint32(len(lines)))
	switch op % 6 {
	case 0:
		out[i] ^= byte(n) | 1
	case 1:
		out = append(out[:i], out[min(i+1+int(n)%64, len(out)):]...)
	case 2:
		out = append(out[:i], append(append([]byte(nil), data...), out[i:]...)...)
	case 3:
		out = bytes.Join(lines[:l], nil)
	case 4:
		lines[l], lines[m] = lines[m], lines[l]
		out = bytes.Join(lines, nil)
	case 5:
		lines = append(lines[:l], append([][]byte{lines[m]}, lines[l:]...)...)
		out = bytes.Join(lines, nil)
	}
	return out
}

// FuzzVerify: a chained log verifies, with its line count and the hash of
// its last line as head; once altered (a byte, a cut, an insertion, lines
// dropped from the end, swapped or repeated), it never verifies to the same
// head, and never passes a check against its recorded head unless lines were
// only added after it. Any input that verifies is whole lines whose head is
// the hash of the last one.
func FuzzVerify(f *testing.F) {
	f.Add("{\"event\": \"apikey.denied\", \"key_id\": \"k_a\"}\n{\"event\": \"key.revoked\"}\n{\"n\": 3}", uint8(0), uint32(10), uint16(3), []byte("x"))
	f.Add("a\nb\nc\nd", uint8(3), uint32(2), uint16(0), []byte(nil))
	f.Add("a\nb\nc\nd", uint8(4), uint32(1), uint16(2), []byte(nil))
	f.Add("a\nb\nc\nd", uint8(5), uint32(3), uint16(3), []byte(nil))
	f.Add("a\nb", uint8(2), uint32(0), uint16(0), []byte("{\"prev\": \""+Genesis+"\"}\n"))
	f.Add("a", uint8(1), uint32(5), uint16(100), []byte(nil))
	f.Add("", uint8(2), uint32(0), uint16(0), []byte("{}\n"))
	f.Add("{\"prev\": \"x\", \"event\": \"audit.recovered\", \"torn_line\": 1}\n{\"event\": \"audit.truncated\"}", uint8(0), uint32(0), uint16(0), []byte(nil))

	f.Fuzz(func(t *testing.T, entries string, op uint8, pos uint32, n uint16, data []byte) {
		// Any input: what verifies is whole lines, the head the last one's.
		if lines, head, err := Verify(strings.NewReader(entries)); err == nil {
			want := Genesis
			if entries != "" {
				if !strings.HasSuffix(entries, "\n") {
					t.Fatal("a log without a newline at its end verified")
				}
				body := strings.TrimSuffix(entries, "\n")
				sum := sha256.Sum256([]byte(body[strings.LastIndexByte(body, '\n')+1:]))
				want = hex.EncodeToString(sum[:])
			}
			if lines != strings.Count(entries, "\n") || head != want {
				t.Fatalf("verified %d lines with head %s; the input has %d lines, its last hashing to %s", lines, head, strings.Count(entries, "\n"), want)
			}
		}

		log, head := chain(t, fuzzEntries(entries))
		count := bytes.Count(log, []byte("\n"))
		lines, gotHead, err := Verify(bytes.NewReader(log))
		if err != nil || lines != count || gotHead != head {
			t.Fatalf("a chained log of %d lines with head %s: Verify says %d lines, head %s, %v", count, head, lines, gotHead, err)
		}
		recorded := Head{Lines: int64(count), SHA256: head}
		if _, err := Check(bytes.NewReader(log), recorded); err != nil {
			t.Fatalf("a chained log fails the check against its own head: %v", err)
		}

		altered := alter(log, op, pos, n, data)
		if bytes.Equal(altered, log) {
			return
		}
		if _, h, err := Verify(bytes.NewReader(altered)); err == nil && h == head {
			t.Fatalf("an altered log (change %d at byte %d) verified with the original head", op%6, pos)
		}
		if _, err := Check(bytes.NewReader(altered), recorded); err == nil && !bytes.HasPrefix(altered, log) {
			t.Fatalf("an altered log (change %d at byte %d) passed the check against the recorded head", op%6, pos)
		}
	})
}
