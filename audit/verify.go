package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxLine bounds the length of a line Check reads; the writers' lines are
// far shorter.
const maxLine = 1 << 20

// Result is what Check found in a log whose chain is whole.
type Result struct {
	// Head is the log's: its lines and the hash of the last one.
	Head Head
	// Torn are the first torn lines (up to 10): lines a write left without
	// their newline, which the next writer closed off and named in an
	// audit.recovered entry. TornLines counts them all.
	Torn      []int64
	TornLines int64
	// Continues is the head of the file this one continues, as its first
	// line (an audit.continued entry, written by a roll) names it; nil
	// when the log starts its own chain.
	Continues *Head

	looseFound []bool
}

// Verify reads a whole log and checks the chain. It returns the number of
// lines and the hash of the last one, or an error naming the first bad line.
// See Check.
func Verify(r io.Reader) (lines int, head string, err error) {
	res, err := Check(r)
	return int(res.Head.Lines), res.Head.SHA256, err
}

// Check reads a log and checks its chain: every line's "prev" must be the
// hash of the line before it (Genesis for the first). It returns an error
// naming the first bad line. It reads one line at a time.
//
// A torn line (a write cut short) closed off by a writer is accepted when
// the audit.recovered entry right after it names it (its line number and
// SHA-256) and chains to the line before it: the torn line stays in the
// log, outside the chain, and changing it or its recovery entry still
// breaks the chain. An audit.truncated entry, written by a writer that
// found the log cut, fails the check.
//
// Each of heads must be in the log: at its line, or anywhere for a head of
// AnyLine. A head that is not there means lines were cut from the end or
// the log was rewritten.
//
// A log a roll started begins with an audit.continued entry that chains to
// the last line of the file before (see Roll): Check accepts it when its
// "prev" is the previous_sha256 it names, and reports that head in
// Result.Continues; CheckFiles checks it against that file.
func Check(r io.Reader, heads ...Head) (Result, error) {
	return check(r, nil, heads, nil)
}

// check is Check. When after is not nil, the log must continue the file
// whose head it is. Each of loose is looked for too, without failing:
// found[i] says which were at their line (or anywhere, for AnyLine).
func check(r io.Reader, after *Head, heads []Head, loose []Head) (res Result, err error) {
	looseFound := make([]bool, len(loose))
	reachedLoose := func(n int64, sum string) {
		for i, h := range loose {
			if (h.Lines == n || h.Lines == AnyLine) && h.SHA256 == sum {
				looseFound[i] = true
			}
		}
	}
	defer func() { res.looseFound = looseFound }()
	br := bufio.NewReaderSize(r, 64<<10)
	prev := Genesis
	var n, size int64
	found := make([]bool, len(heads))
	reached := func(sum string) error {
		reachedLoose(n, sum)
		for i, h := range heads {
			switch {
			case h.Lines == n && h.SHA256 != sum:
				return fmt.Errorf("line %d: is not the recorded head %s (its sha256 is %s): the log was rewritten from there, or cut and written on", n, h, sum)
			case h.Lines == n || (h.Lines == AnyLine && h.SHA256 == sum):
				found[i] = true
			}
		}
		return nil
	}
	if err := reached(Genesis); err != nil {
		return res, err
	}

	cur, err := readLine(br, n+1)
	for err == nil && cur != nil {
		if !cur.whole {
			return res, fmt.Errorf("line %d: incomplete (no newline at the end): a write was cut short (a full disk, a crash) or the log was cut; the next append closes it off", n+1)
		}
		next, nextErr := readLine(br, n+2)
		if nextErr != nil {
			return res, nextErr
		}
		if next != nil && next.whole && recovers(next.data, n+1, cur.data, prev) {
			// cur is torn: outside the chain; its recovery entry chains on.
			n += 2
			size += int64(len(cur.data) + len(next.data) + 2)
			res.TornLines++
			if len(res.Torn) < 10 {
				res.Torn = append(res.Torn, n-1)
			}
			prev = lineHash(next.data)
			if err := reached(prev); err != nil {
				return res, err
			}
			cur, err = readLine(br, n+1)
			continue
		}
		n++
		size += int64(len(cur.data) + 1)
		var e struct {
			V              json.RawMessage `json:"v"`
			Prev           *string         `json:"prev"`
			Event          string          `json:"event"`
			HeadLines      int64           `json:"head_lines"`
			HeadSHA256     string          `json:"head_sha256"`
			LinesFound     int64           `json:"lines_found"`
			PreviousLines  int64           `json:"previous_lines"`
			PreviousSHA256 string          `json:"previous_sha256"`
		}
		if err := json.Unmarshal(cur.data, &e); err != nil {
			return res, fmt.Errorf("line %d: not valid JSON: %v", n, err)
		}
		if v, err := lineVersion(e.V); err != nil {
			return res, fmt.Errorf("line %d: %v", n, err)
		} else if v > FormatVersion {
			return res, &NewerFormatError{Line: n, Version: v}
		}
		if e.Prev == nil {
			return res, fmt.Errorf("line %d: no \"prev\" field", n)
		}
		if n == 1 && e.Event == EventContinued {
			// A roll started this log: it chains to the file before.
			if *e.Prev != e.PreviousSHA256 {
				return res, fmt.Errorf("line 1: an audit.continued entry whose prev is not the previous_sha256 it names")
			}
			if after != nil && (e.PreviousSHA256 != after.SHA256 || e.PreviousLines != after.Lines) {
				return res, fmt.Errorf("line 1: continues a file whose head was %d:%s, but the file before ends at %s: that file was changed, cut or replaced", e.PreviousLines, e.PreviousSHA256, after)
			}
			res.Continues = &Head{Lines: e.PreviousLines, SHA256: e.PreviousSHA256}
			prev = *e.Prev
		} else if n == 1 && after != nil {
			return res, fmt.Errorf("line 1: does not continue the file before it (no audit.continued entry): a file was put in its place")
		}
		if *e.Prev != prev {
			if n == 1 {
				return res, fmt.Errorf("line 1: does not start the chain (lines before it were removed?)")
			}
			return res, fmt.Errorf("line %d: does not follow line %d: line %d was edited, or lines were removed or inserted between them", n, n-1, n-1)
		}
		if e.Event == EventTruncated {
			return res, fmt.Errorf("line %d: the log's writer found it cut here: its head had recorded %d lines, the last with sha256 %s, and only %d were left", n, e.HeadLines, e.HeadSHA256, e.LinesFound)
		}
		prev = lineHash(cur.data)
		if err := reached(prev); err != nil {
			return res, err
		}
		cur = next
	}
	if err != nil {
		return res, err
	}
	res.Head = Head{Lines: n, SHA256: prev, Size: size}
	for i, h := range heads {
		switch {
		case found[i]:
		case h.Lines == AnyLine:
			return res, fmt.Errorf("no line has the recorded head's sha256 %s: the log was cut before it, or changed (it has %d lines)", h.SHA256, n)
		default:
			return res, fmt.Errorf("the log has %d lines, but the recorded head %s is at line %d: lines were cut from the end", n, h, h.Lines)
		}
	}
	return res, nil
}

// recovers reports whether line is the audit.recovered entry for the torn
// line number n with content torn, chained to prev (the line before it).
func recovers(line []byte, n int64, torn []byte, prev string) bool {
	var e struct {
		Event      string `json:"event"`
		Prev       string `json:"prev"`
		TornLine   int64  `json:"torn_line"`
		TornSHA256 string `json:"torn_sha256"`
	}
	return json.Unmarshal(line, &e) == nil && e.Event == EventRecovered && e.TornLine == n &&
		e.Prev == prev && e.TornSHA256 == lineHash(torn)
}

type rawLine struct {
	data  []byte
	whole bool // ended with a newline
}

// readLine reads the next line (number n, for errors), nil at the end.
func readLine(br *bufio.Reader, n int64) (*rawLine, error) {
	var data []byte
	for {
		part, err := br.ReadSlice('\n')
		if len(data)+len(part) > maxLine+1 {
			return nil, fmt.Errorf("line %d: longer than %d bytes, not a line of this log", n, maxLine)
		}
		data = append(data, part...)
		switch {
		case err == nil:
			return &rawLine{data: data[:len(data)-1], whole: true}, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(data) == 0 {
				return nil, nil
			}
			return &rawLine{data: data}, nil
		default:
			return nil, err
		}
	}
}
