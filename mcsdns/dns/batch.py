"""recvmmsg(2) and sendmmsg(2) for the UDP listeners: many datagrams per system call, through ctypes.

On a small VM a loopback datagram costs more in the kernel than mcsdns spends answering it, and most of
that is the system call itself: uvloop reads and sends one datagram per call. NSD and Unbound read a batch
with one recvmmsg and send the replies with one sendmmsg; this module gives the listener the same two
calls. The buffers are allocated once per socket: ``recv`` fills up to ``BATCH`` slots and returns how
many, ``queue`` copies a reply into the next send slot addressed to a received datagram's sender (its
sockaddr is reused as is, never parsed), ``queue_to`` one addressed to a sender kept from an earlier batch
(a forwarded answer), ``flush`` sends every queued reply. The forwarder reads its upstream sockets through
one receive-only ``Batch`` (``sends=0``): the loop runs one reader at a time, so they can share its arrays.

Linux only (glibc or musl export both calls); ``available()`` says whether they can be used, and the
listener keeps uvloop's datagram transport otherwise. Pure ctypes: no compiled code ships with mcsdns.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys

BATCH = 64  # datagrams per recvmmsg: what a loaded listener finds waiting, at one wake-up
SLOT = 4096  # bytes a received datagram may have (a larger query is cut and flagged MSG_TRUNC)
SEND_SLOT = 4096  # bytes a reply may have: replies fit the client's UDP payload, at most 1232 bytes here
NAME = 128  # sizeof(struct sockaddr_storage)
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


# Offsets into the arrays viewed as 32-bit words (headers) and 64-bit words (pointers and sizes), so that
# the per-datagram work is list indexing on memoryviews, not ctypes attribute access.
_HDR_WORDS = ctypes.sizeof(_Mmsghdr) // 4
_LEN_WORD = _Mmsghdr.msg_len.offset // 4
_NAMELEN_WORD = _Msghdr.msg_namelen.offset // 4
_FLAGS_WORD = _Msghdr.msg_flags.offset // 4
_HDR_QWORDS = ctypes.sizeof(_Mmsghdr) // 8
_NAME_QWORD = _Msghdr.msg_name.offset // 8
_NAMELEN_QWORD = _Msghdr.msg_namelen.offset // 8
_IOV_LEN_QWORD = _Iovec.iov_len.offset // 8
_IOV_QWORDS = ctypes.sizeof(_Iovec) // 8


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    try:
        # dlopen(NULL): the symbols the interpreter already links, libc's among them; find_library would
        # run ldconfig (or a compiler) at import to find the same library.
        libc = ctypes.CDLL(None, use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recv.restype = ctypes.c_int
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    send.restype = ctypes.c_int
    return libc


_LIBC = _libc()


def available() -> bool:
    """Whether recvmmsg and sendmmsg can be called (Linux, 64-bit, a libc that has them)."""
    return _LIBC is not None


class Batch:
    """The receive and send arrays of a UDP socket: ``slots`` datagrams of up to ``slot`` bytes read per
    call, up to ``sends`` datagrams of up to ``send_slot`` bytes sent per call (either may be 0)."""

    def __init__(
        self,
        fd: int,
        *,
        slots: int = BATCH,
        slot: int = SLOT,
        sends: int = BATCH,
        send_slot: int = SEND_SLOT,
    ) -> None:
        assert _LIBC is not None
        self._recvmmsg, self._sendmmsg = _LIBC.recvmmsg, _LIBC.sendmmsg
        self._fd = fd
        self.slots, self.slot, self.sends, self.send_slot = slots, slot, sends, send_slot
        self._data = ctypes.create_string_buffer(max(slots, 1) * slot)
        self._names = ctypes.create_string_buffer(max(slots, 1) * NAME)
        self._out = ctypes.create_string_buffer(max(sends, 1) * send_slot)
        self._kept = ctypes.create_string_buffer(max(sends, 1) * NAME)  # queue_to's copies of senders
        self._riov = (_Iovec * max(slots, 1))()
        self._rmsgs = (_Mmsghdr * max(slots, 1))()
        self._siov = (_Iovec * max(sends, 1))()
        self._smsgs = (_Mmsghdr * max(sends, 1))()
        data, names, out = (ctypes.addressof(b) for b in (self._data, self._names, self._out))
        for i in range(slots):
            self._riov[i].iov_base, self._riov[i].iov_len = data + i * slot, slot
            header = self._rmsgs[i].msg_hdr
            header.msg_name, header.msg_namelen = names + i * NAME, NAME
            header.msg_iov, header.msg_iovlen = ctypes.addressof(self._riov[i]), 1
        for i in range(sends):
            self._siov[i].iov_base = out + i * send_slot
            header = self._smsgs[i].msg_hdr
            header.msg_iov, header.msg_iovlen = ctypes.addressof(self._siov[i]), 1
        self._names_at = names
        self._kept_at = ctypes.addressof(self._kept)
        self._keptview = memoryview(self._kept).cast("B")
        self._rwords = memoryview(self._rmsgs).cast("B").cast("I")
        self._swords = memoryview(self._smsgs).cast("B").cast("Q")
        self._siov_words = memoryview(self._siov).cast("B").cast("Q")
        self.data = memoryview(self._data).cast("B")
        self.names = memoryview(self._names).cast("B")
        self._outview = memoryview(self._out).cast("B")
        self._received = 0  # slots the last recv filled: the kernel wrote their senders' lengths
        self.queued = 0

    def recv(self, fd: int | None = None) -> int:
        """Read up to ``slots`` datagrams from this socket (or ``fd``) without blocking; how many (0 when
        none waits)."""
        words = self._rwords
        for i in range(self._received):  # the kernel wrote each sender's length over the buffer's size
            words[i * _HDR_WORDS + _NAMELEN_WORD] = NAME
        count: int = self._recvmmsg(
            self._fd if fd is None else fd, ctypes.addressof(self._rmsgs), self.slots, MSG_DONTWAIT, None
        )
        if count < 0:
            self._received = 0
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(code, os.strerror(code))
        self._received = count
        return count

    def datagram(self, i: int) -> tuple[bytes, bool]:
        """The ``i``th datagram read, and whether it was cut to a slot's ``slot`` bytes."""
        words, slot = self._rwords, self.slot
        length = words[i * _HDR_WORDS + _LEN_WORD]
        truncated = bool(words[i * _HDR_WORDS + _FLAGS_WORD] & MSG_TRUNC)
        return bytes(self.data[i * slot : i * slot + min(length, slot)]), truncated

    def sender(self, i: int) -> bytes:
        """The ``i``th datagram's source, as the kernel's sockaddr bytes."""
        length = self._rwords[i * _HDR_WORDS + _NAMELEN_WORD]
        return bytes(self.names[i * NAME : i * NAME + min(length, NAME)])

    def queue(self, i: int, reply: bytes) -> bool:
        """Queue ``reply`` to the ``i``th datagram's sender (until the next ``recv``); False when it does
        not fit a send slot or every slot is taken."""
        size, slot, at = len(reply), self.queued, self.queued * self.send_slot
        if size > self.send_slot or slot >= self.sends:
            return False
        self._outview[at : at + size] = reply
        self._siov_words[slot * _IOV_QWORDS + _IOV_LEN_QWORD] = size
        words = self._swords
        words[slot * _HDR_QWORDS + _NAME_QWORD] = self._names_at + i * NAME
        words[slot * _HDR_QWORDS + _NAMELEN_QWORD] = self._rwords[i * _HDR_WORDS + _NAMELEN_WORD]
        self.queued = slot + 1
        return True

    def queue_to(self, name: bytes | None, reply: bytes) -> bool:
        """Queue ``reply`` to ``name`` (a ``sender`` kept from an earlier batch), with its own copy of the
        address (``name`` None: the socket's connected peer); False when it does not fit a send slot or
        every slot is taken."""
        size, slot, at = len(reply), self.queued, self.queued * self.send_slot
        if size > self.send_slot or slot >= self.sends or (name is not None and len(name) > NAME):
            return False
        self._outview[at : at + size] = reply
        self._siov_words[slot * _IOV_QWORDS + _IOV_LEN_QWORD] = size
        words = self._swords
        if name is None:
            words[slot * _HDR_QWORDS + _NAME_QWORD] = words[slot * _HDR_QWORDS + _NAMELEN_QWORD] = 0
        else:
            self._keptview[slot * NAME : slot * NAME + len(name)] = name
            words[slot * _HDR_QWORDS + _NAME_QWORD] = self._kept_at + slot * NAME
            words[slot * _HDR_QWORDS + _NAMELEN_QWORD] = len(name)
        self.queued = slot + 1
        return True

    def flush(self, failed: list[int] | None = None) -> int:
        """Send every queued datagram; how many were dropped: all that remain when the socket's buffer is
        full (as a full socket drops), and one for each the kernel refuses (an unreachable sender). Their
        places in the queue are added to ``failed`` when given."""
        queued, self.queued = self.queued, 0
        sent = dropped = 0
        base, size = ctypes.addressof(self._smsgs), ctypes.sizeof(_Mmsghdr)
        while sent < queued:
            done = self._sendmmsg(self._fd, base + sent * size, queued - sent, MSG_DONTWAIT)
            if done > 0:
                sent += done
                continue
            if ctypes.get_errno() in (errno.EAGAIN, errno.EWOULDBLOCK):
                if failed is not None:
                    failed.extend(range(sent, queued))
                return dropped + queued - sent
            if failed is not None:
                failed.append(sent)
            sent, dropped = sent + 1, dropped + 1  # sendmmsg stops at a datagram that fails: skip that one
        return dropped


def address(name: bytes) -> tuple[str, int] | tuple[str, int, int, int]:
    """A sockaddr from ``Batch.sender`` as the (host, port[, flowinfo, scope]) tuple sockets take."""
    family = int.from_bytes(name[:2], sys.byteorder)
    port = int.from_bytes(name[2:4], "big")
    if family == socket.AF_INET6:
        host = socket.inet_ntop(socket.AF_INET6, name[8:24])
        return host, port, int.from_bytes(name[4:8], "big"), int.from_bytes(name[24:28], sys.byteorder)
    return socket.inet_ntop(socket.AF_INET, name[4:8]), port
