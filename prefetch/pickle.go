package prefetch

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
)

// This file is a small, data-only unpickler for DCP's .metadata. It never
// calls anything: a global is recorded as a pyGlobal, a call (REDUCE,
// NEWOBJ) as a pyObject holding its class and arguments, BUILD stores the
// state in the object. The caller maps the resulting tree to Go structs and
// rejects shapes it does not expect. Every length is checked against the
// remaining input before anything is allocated, and there is no recursion,
// so hostile input costs at most time linear in its size.

// pyGlobal is a module-level name (a class or function) from GLOBAL or
// STACK_GLOBAL.
type pyGlobal struct{ Module, Name string }

func (g pyGlobal) String() string { return g.Module + "." + g.Name }

// pyObject is the result of calling a global (REDUCE, NEWOBJ) and of any
// BUILD, SETITEMS or APPENDS applied to it afterwards.
type pyObject struct {
	Class pyGlobal
	Args  []any
	State any
	Items []pyKV
	List  []any
}

type (
	pyTuple []any
	pyList  struct{ Items []any }
	pyDict  struct{ Items []pyKV }
	pyKV    struct{ K, V any }
	pyMark  struct{}
)

// pickle opcodes (Lib/pickle.py), protocols 0–5.
const (
	opMark           = '('
	opStop           = '.'
	opPop            = '0'
	opPopMark        = '1'
	opDup            = '2'
	opBinInt         = 'J'
	opBinInt1        = 'K'
	opBinInt2        = 'M'
	opNone           = 'N'
	opReduce         = 'R'
	opBinString      = 'T'
	opShortBinString = 'U'
	opBinUnicode     = 'X'
	opAppend         = 'a'
	opBuild          = 'b'
	opGlobal         = 'c'
	opDict           = 'd'
	opEmptyDict      = '}'
	opAppends        = 'e'
	opBinGet         = 'h'
	opLongBinGet     = 'j'
	opList           = 'l'
	opEmptyList      = ']'
	opBinPut         = 'q'
	opLongBinPut     = 'r'
	opSetItem        = 's'
	opTuple          = 't'
	opEmptyTuple     = ')'
	opSetItems       = 'u'
	opBinFloat       = 'G'
	opBinBytes       = 'B'
	opShortBinBytes  = 'C'
	opProto          = 0x80
	opNewObj         = 0x81
	opTuple1         = 0x85
	opTuple2         = 0x86
	opTuple3         = 0x87
	opNewTrue        = 0x88
	opNewFalse       = 0x89
	opLong1          = 0x8a
	opLong4          = 0x8b
	opShortBinUni    = 0x8c
	opBinUnicode8    = 0x8d
	opBinBytes8      = 0x8e
	opEmptySet       = 0x8f
	opAddItems       = 0x90
	opFrozenSet      = 0x91
	opNewObjEx       = 0x92
	opStackGlobal    = 0x93
	opMemoize        = 0x94
	opFrame          = 0x95
	opByteArray8     = 0x96
)

type unpickler struct {
	data  []byte
	pos   int
	stack []any
	marks []int
	memo  map[uint64]any
	// allow vets every global before it is recorded.
	allow func(pyGlobal) error
}

// unpickle decodes one pickle from data; trailing bytes are an error.
func unpickle(data []byte, allow func(pyGlobal) error) (any, error) {
	u := &unpickler{data: data, memo: map[uint64]any{}, allow: allow}
	v, err := u.run()
	if err != nil {
		return nil, fmt.Errorf("pickle: at byte %d: %w", u.pos, err)
	}
	if u.pos != len(data) {
		return nil, fmt.Errorf("pickle: %d bytes after STOP: %w", len(data)-u.pos, ErrMalformed)
	}
	return v, nil
}

func errf(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrMalformed)...)
}

func (u *unpickler) take(n uint64) ([]byte, error) {
	if n > uint64(len(u.data)-u.pos) {
		return nil, errf("%d bytes wanted, %d left", n, len(u.data)-u.pos)
	}
	b := u.data[u.pos : u.pos+int(n)]
	u.pos += int(n)
	return b, nil
}

func (u *unpickler) uint(n int) (uint64, error) {
	b, err := u.take(uint64(n))
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

// line reads up to '\n' (GLOBAL's text arguments).
func (u *unpickler) line() (string, error) {
	for i := u.pos; i < len(u.data); i++ {
		if u.data[i] == '\n' {
			s := string(u.data[u.pos:i])
			u.pos = i + 1
			return s, nil
		}
	}
	return "", errf("unterminated line")
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	n := len(u.stack)
	if n == 0 || (len(u.marks) > 0 && u.marks[len(u.marks)-1] == n) {
		return nil, errf("stack underflow")
	}
	v := u.stack[n-1]
	u.stack = u.stack[:n-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	n := len(u.stack)
	if n == 0 || (len(u.marks) > 0 && u.marks[len(u.marks)-1] == n) {
		return nil, errf("stack underflow")
	}
	return u.stack[n-1], nil
}

// popMark pops everything above the topmost mark.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, errf("no mark")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

func (u *unpickler) global(g pyGlobal) error {
	if u.allow != nil {
		if err := u.allow(g); err != nil {
			return err
		}
	}
	u.push(g)
	return nil
}

func (u *unpickler) run() (any, error) {
	for {
		if u.pos >= len(u.data) {
			return nil, errf("no STOP opcode")
		}
		op := u.data[u.pos]
		u.pos++
		switch op {
		case opProto:
			v, err := u.uint(1)
			if err != nil {
				return nil, err
			}
			if v > 5 {
				return nil, errf("unsupported pickle protocol %d", v)
			}
		case opFrame:
			// Frames only group opcodes for buffering; their content follows.
			if _, err := u.take(8); err != nil {
				return nil, err
			}
		case opStop:
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			return v, nil
		case opMark:
			u.marks = append(u.marks, len(u.stack))
		case opPop:
			if len(u.marks) > 0 && u.marks[len(u.marks)-1] == len(u.stack) {
				u.marks = u.marks[:len(u.marks)-1]
			} else if _, err := u.pop(); err != nil {
				return nil, err
			}
		case opPopMark:
			if _, err := u.popMark(); err != nil {
				return nil, err
			}
		case opDup:
			v, err := u.top()
			if err != nil {
				return nil, err
			}
			u.push(v)
		case opNone:
			u.push(nil)
		case opNewTrue:
			u.push(true)
		case opNewFalse:
			u.push(false)
		case opBinInt:
			v, err := u.uint(4)
			if err != nil {
				return nil, err
			}
			u.push(int64(int32(uint32(v))))
		case opBinInt1:
			v, err := u.uint(1)
			if err != nil {
				return nil, err
			}
			u.push(int64(v))
		case opBinInt2:
			v, err := u.uint(2)
			if err != nil {
				return nil, err
			}
			u.push(int64(v))
		case opLong1, opLong4:
			width := 1
			if op == opLong4 {
				width = 4
			}
			n, err := u.uint(width)
			if err != nil {
				return nil, err
			}
			if op == opLong4 && int32(uint32(n)) < 0 {
				return nil, errf("negative LONG4 length")
			}
			b, err := u.take(n)
			if err != nil {
				return nil, err
			}
			u.push(decodeLong(b))
		case opBinFloat:
			b, err := u.take(8)
			if err != nil {
				return nil, err
			}
			u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
		case opShortBinUni, opBinUnicode, opBinUnicode8, opShortBinString, opBinString,
			opShortBinBytes, opBinBytes, opBinBytes8, opByteArray8:
			n, err := u.uint(lengthWidth(op))
			if err != nil {
				return nil, err
			}
			b, err := u.take(n)
			if err != nil {
				return nil, err
			}
			switch op {
			case opShortBinUni, opBinUnicode, opBinUnicode8, opShortBinString, opBinString:
				u.push(string(b))
			default:
				u.push(append([]byte(nil), b...))
			}
		case opEmptyTuple:
			u.push(pyTuple{})
		case opTuple:
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			u.push(pyTuple(items))
		case opTuple1, opTuple2, opTuple3:
			n := int(op-opTuple1) + 1
			t := make(pyTuple, n)
			for i := n - 1; i >= 0; i-- {
				v, err := u.pop()
				if err != nil {
					return nil, err
				}
				t[i] = v
			}
			u.push(t)
		case opEmptyList:
			u.push(&pyList{})
		case opList:
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			u.push(&pyList{Items: items})
		case opAppend:
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			if err := u.appendTo([]any{v}); err != nil {
				return nil, err
			}
		case opAppends, opAddItems:
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			if err := u.appendTo(items); err != nil {
				return nil, err
			}
		case opEmptySet:
			u.push(&pyList{})
		case opFrozenSet:
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			u.push(&pyList{Items: items})
		case opEmptyDict:
			u.push(&pyDict{})
		case opDict:
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			if len(items)%2 != 0 {
				return nil, errf("DICT with an odd number of items")
			}
			d := &pyDict{}
			for i := 0; i < len(items); i += 2 {
				d.Items = append(d.Items, pyKV{items[i], items[i+1]})
			}
			u.push(d)
		case opSetItem:
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			k, err := u.pop()
			if err != nil {
				return nil, err
			}
			if err := u.setItems([]any{k, v}); err != nil {
				return nil, err
			}
		case opSetItems:
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			if len(items)%2 != 0 {
				return nil, errf("SETITEMS with an odd number of items")
			}
			if err := u.setItems(items); err != nil {
				return nil, err
			}
		case opGlobal:
			mod, err := u.line()
			if err != nil {
				return nil, err
			}
			name, err := u.line()
			if err != nil {
				return nil, err
			}
			if err := u.global(pyGlobal{mod, name}); err != nil {
				return nil, err
			}
		case opStackGlobal:
			nv, err := u.pop()
			if err != nil {
				return nil, err
			}
			mv, err := u.pop()
			if err != nil {
				return nil, err
			}
			mod, ok1 := mv.(string)
			name, ok2 := nv.(string)
			if !ok1 || !ok2 {
				return nil, errf("STACK_GLOBAL needs two strings")
			}
			if err := u.global(pyGlobal{mod, name}); err != nil {
				return nil, err
			}
		case opReduce, opNewObj:
			args, err := u.pop()
			if err != nil {
				return nil, err
			}
			cls, err := u.pop()
			if err != nil {
				return nil, err
			}
			if err := u.call(cls, args); err != nil {
				return nil, err
			}
		case opNewObjEx:
			if _, err := u.pop(); err != nil { // kwargs
				return nil, err
			}
			args, err := u.pop()
			if err != nil {
				return nil, err
			}
			cls, err := u.pop()
			if err != nil {
				return nil, err
			}
			if err := u.call(cls, args); err != nil {
				return nil, err
			}
		case opBuild:
			state, err := u.pop()
			if err != nil {
				return nil, err
			}
			obj, err := u.top()
			if err != nil {
				return nil, err
			}
			o, ok := obj.(*pyObject)
			if !ok {
				return nil, errf("BUILD on %T", obj)
			}
			o.State = state
		case opBinPut, opLongBinPut:
			width := 1
			if op == opLongBinPut {
				width = 4
			}
			idx, err := u.uint(width)
			if err != nil {
				return nil, err
			}
			v, err := u.top()
			if err != nil {
				return nil, err
			}
			u.memo[idx] = v
		case opMemoize:
			v, err := u.top()
			if err != nil {
				return nil, err
			}
			u.memo[uint64(len(u.memo))] = v
		case opBinGet, opLongBinGet:
			width := 1
			if op == opLongBinGet {
				width = 4
			}
			idx, err := u.uint(width)
			if err != nil {
				return nil, err
			}
			v, ok := u.memo[idx]
			if !ok {
				return nil, errf("memo %d unset", idx)
			}
			u.push(v)
		default:
			// Text-protocol opcodes, persistent ids, extension registry and
			// out-of-band buffers never appear in a protocol 2+ .metadata.
			return nil, errf("unsupported pickle opcode 0x%02x", op)
		}
	}
}

// lengthWidth is the size of the length prefix of a string or bytes opcode.
func lengthWidth(op byte) int {
	switch op {
	case opShortBinUni, opShortBinString, opShortBinBytes:
		return 1
	case opBinUnicode, opBinString, opBinBytes:
		return 4
	}
	return 8
}

func (u *unpickler) call(cls, args any) error {
	g, ok := cls.(pyGlobal)
	if !ok {
		return errf("call of %T, not a global", cls)
	}
	t, ok := args.(pyTuple)
	if !ok {
		return errf("call of %s with %T arguments", g, args)
	}
	u.push(&pyObject{Class: g, Args: t})
	return nil
}

func (u *unpickler) appendTo(items []any) error {
	obj, err := u.top()
	if err != nil {
		return err
	}
	switch o := obj.(type) {
	case *pyList:
		o.Items = append(o.Items, items...)
	case *pyObject:
		o.List = append(o.List, items...)
	default:
		return errf("APPEND to %T", obj)
	}
	return nil
}

func (u *unpickler) setItems(items []any) error {
	obj, err := u.top()
	if err != nil {
		return err
	}
	var kvs []pyKV
	for i := 0; i < len(items); i += 2 {
		kvs = append(kvs, pyKV{items[i], items[i+1]})
	}
	switch o := obj.(type) {
	case *pyDict:
		o.Items = append(o.Items, kvs...)
	case *pyObject:
		o.Items = append(o.Items, kvs...)
	default:
		return errf("SETITEM on %T", obj)
	}
	return nil
}

// decodeLong decodes a little-endian two's-complement integer: an int64
// when it fits, else a *big.Int.
func decodeLong(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	if len(b) <= 8 {
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		shift := 64 - 8*uint(len(b))
		return int64(v<<shift) >> shift
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	n := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return n
}
