//! [`V4l2Source`]: USB webcams (and any other Video4Linux2 capture device that sends MJPEG),
//! spoken to directly through the kernel's V4L2 API with `ioctl` and `mmap`.
//!
//! Why: a webcam is the cheapest camera a WANDA node can have, and `rpicam-still` does not drive
//! USB cameras. Talking to the kernel directly (a handful of `#[repr(C)]` structs and ioctl
//! numbers, checked against `include/uapi/linux/videodev2.h` by the tests) needs no libv4l, no
//! C build dependency and nothing installed on the Pi. MJPEG is asked for because the webcam
//! compresses the frame itself: a still is a frame copied out, with no decoding or encoding on
//! the Pi. Many webcams leave the Huffman tables out of their MJPEG frames (the decoder is meant
//! to know the defaults), which ordinary JPEG decoders refuse; `mjpeg_to_jpeg` puts the
//! standard tables in, so every viewer opens the still.
//!
//! Streaming per still: every capture requests buffers, maps them, streams on, discards
//! `warmup_frames` frames (auto-exposure and white balance settle over the first frames), keeps
//! the next good one, then streams off, unmaps and frees the buffers. Between stills the camera
//! is idle (no USB bandwidth, no heat, its LED off), which suits timed mode, where stills are
//! minutes apart; the price is the warm-up on every still (a fraction of a second at 30 fps),
//! which rapid mode can lower with a smaller `warmup_frames`. The format is set once, in
//! [`V4l2Source::open`], and kept while the device stays open.
//!
//! Every wait is bounded (`timeout` per frame, a fixed number of bad frames skipped), and every
//! kernel resource (streaming, mappings, buffers) is owned by a guard that releases it on every
//! path, errors included.
//!
//! Manual check (needs a webcam, or the `vivid` test driver, which this project's CI machines
//! lack):
//!
//! ```text
//! v4l2-ctl --list-devices                           # which /dev/videoN is the webcam
//! v4l2-ctl -d /dev/video0 --list-formats-ext        # it must list MJPG (or JPEG)
//! wanda-ipfs capture --session test --source v4l2 --device /dev/video0 --count 3
//! file <captures>/test/image_*.jpg                  # "JPEG image data, ... 1920x1080" (or the size chosen)
//! xdg-open <captures>/test/image_0001.jpg           # a sensible, well-exposed picture
//! ```
//!
//! Without a webcam: `sudo modprobe vivid`, then the same command on its capture node. vivid
//! generates raw formats; if `v4l2-ctl -d /dev/videoN --list-formats-ext` lists no MJPG/JPEG
//! there, the expected result is the clear "no MJPEG" error, which still exercises open,
//! VIDIOC_QUERYCAP and VIDIOC_S_FMT (streaming itself needs a webcam). Also check the errors:
//! `--device /dev/video99` (no such device), `--device /dev/null` (not a V4L2 device), a user
//! outside the `video` group (permission denied), and unplugging the webcam mid-session (the
//! still fails within the timeout, with the device named).

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libc::{c_int, c_long, c_ulong};

use super::Source;

/// Frames skipped for being flagged corrupt or not parsing as JPEG before a still fails.
const MAX_BAD_FRAMES: u32 = 8;
/// Retries of an ioctl interrupted by a signal.
const EINTR_RETRIES: u32 = 64;
/// Wake-ups of `poll` without a frame (spurious, or interrupted) while waiting for one frame;
/// the deadline normally ends the wait long before.
const MAX_WAKEUPS: u32 = 10_000;
/// Most buffers asked for (the kernel's VIDEO_MAX_FRAME).
const MAX_BUFFERS: u32 = 32;

/// What to open and how to take a still.
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Options {
    /// The capture device node.
    pub device: PathBuf,
    /// Frame size asked for; the driver picks the nearest it has (logged at open).
    pub width: u32,
    pub height: u32,
    /// Frames thrown away after streaming starts, while auto-exposure settles.
    pub warmup_frames: u32,
    /// Longest wait for any one frame.
    pub timeout: Duration,
    /// Buffers the driver is asked to allocate (1 to 32).
    pub buffers: u32,
}

impl Default for V4l2Options {
    fn default() -> V4l2Options {
        V4l2Options {
            device: PathBuf::from("/dev/video0"),
            width: 1920,
            height: 1080,
            warmup_frames: 5,
            timeout: Duration::from_secs(10),
            buffers: 4,
        }
    }
}

/// A V4L2 webcam, opened and set to MJPEG (or JPEG).
#[derive(Debug)]
pub struct V4l2Source {
    file: File,
    device: PathBuf,
    name: String,
    width: u32,
    height: u32,
    warmup_frames: u32,
    timeout: Duration,
    buffers: u32,
}

impl V4l2Source {
    /// Opens `opts.device`, checks it can capture by streaming, and sets MJPEG at the size
    /// nearest `opts.width` x `opts.height`.
    pub fn open(opts: &V4l2Options) -> Result<V4l2Source> {
        if opts.width == 0 || opts.height == 0 {
            bail!(
                "the frame size must not be zero, got {}x{}",
                opts.width,
                opts.height
            );
        }
        if !(1..=MAX_BUFFERS).contains(&opts.buffers) {
            bail!("buffers must be 1 to {MAX_BUFFERS}, got {}", opts.buffers);
        }
        let device = opts.device.clone();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&device)
            .map_err(|e| open_error(&device, e))?;
        let fd = file.as_fd();

        let mut cap = Capability::zeroed();
        match xioctl(fd, VIDIOC_QUERYCAP, &mut cap) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) => {
                bail!(
                    "{} is not a V4L2 device (VIDIOC_QUERYCAP: {e}); `v4l2-ctl --list-devices` lists the cameras",
                    device.display()
                )
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("querying the capabilities of {}", device.display()))
            }
        }
        check_caps(&cap, &device)?;
        let card = c_string(&cap.card);

        let pix = set_format(fd, &device, opts.width, opts.height)?;
        tracing::info!(
            device = %device.display(),
            card = %card,
            driver = %c_string(&cap.driver),
            format = %fourcc_str(pix.pixelformat),
            width = pix.width,
            height = pix.height,
            asked = %format!("{}x{}", opts.width, opts.height),
            "webcam opened"
        );
        Ok(V4l2Source {
            name: format!("v4l2 {}", device.display()),
            file,
            device,
            width: pix.width,
            height: pix.height,
            warmup_frames: opts.warmup_frames,
            timeout: opts.timeout,
            buffers: opts.buffers,
        })
    }

    /// The frame size the driver chose.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The device node opened.
    pub fn device(&self) -> &Path {
        &self.device
    }

    /// Streams just long enough to take one good frame, as a JPEG.
    fn grab(&mut self) -> Result<Vec<u8>> {
        let dev = self.device.display();
        let mut stream = Stream::start(self.file.as_fd(), self.buffers, &self.device)?;
        let mut warmup = self.warmup_frames;
        let mut bad = 0;
        let most = u64::from(self.warmup_frames) + 1 + u64::from(MAX_BAD_FRAMES);
        for _ in 0..most {
            let buf = stream.dequeue(self.timeout)?;
            if buf.flags & V4L2_BUF_FLAG_ERROR != 0 || buf.bytesused == 0 {
                bad += 1;
                tracing::debug!(device = %dev, flags = buf.flags, "skipping a corrupt frame");
                if bad > MAX_BAD_FRAMES {
                    bail!("{dev} sent {bad} corrupt frames in a row (bad USB cable or hub?)");
                }
                stream.requeue(buf.index)?;
                continue;
            }
            if warmup > 0 {
                warmup -= 1;
                stream.requeue(buf.index)?;
                continue;
            }
            let frame = stream.copy_out(&buf);
            match mjpeg_to_jpeg(&frame) {
                Ok(jpeg) => return Ok(jpeg.into_owned()),
                Err(e) => {
                    bad += 1;
                    tracing::warn!(device = %dev, "skipping a frame: {e:#}");
                    if bad > MAX_BAD_FRAMES {
                        return Err(e).context(format!("{dev} sent no usable JPEG frame"));
                    }
                    stream.requeue(buf.index)?;
                }
            }
        }
        bail!("{dev} sent no usable frame in {most} frames")
    }
}

impl Source for V4l2Source {
    fn capture(&mut self, _number: u32, path: &Path) -> Result<()> {
        // The stream is released (inside `grab`) before the file is written.
        let jpeg = self.grab()?;
        write_still(path, &jpeg)
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Creates `path`, writes `jpeg` and fsyncs it; removes it again if any of that fails.
fn write_still(path: &Path, jpeg: &[u8]) -> Result<()> {
    let written = File::create(path).and_then(|mut f| {
        f.write_all(jpeg)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// The error for a device that would not open, saying what to do about it.
fn open_error(device: &Path, e: io::Error) -> anyhow::Error {
    let d = device.display();
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENODEV | libc::ENXIO) => anyhow::anyhow!(
            "no such device {d}: is the webcam plugged in? `v4l2-ctl --list-devices` lists the cameras ({e})"
        ),
        Some(libc::EACCES | libc::EPERM) => anyhow::anyhow!(
            "permission denied opening {d}: the user must be in the `video` group (`sudo usermod -aG video $USER`, then log in again) ({e})"
        ),
        Some(libc::EBUSY) => {
            anyhow::anyhow!("{d} is busy: another program is using the webcam ({e})")
        }
        _ => anyhow::Error::new(e).context(format!("opening {d}")),
    }
}

/// Checks the device (node) can capture single-planar video by streaming.
fn check_caps(cap: &Capability, device: &Path) -> Result<()> {
    let caps = if cap.capabilities & V4L2_CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    };
    let mut missing = Vec::new();
    if caps & V4L2_CAP_VIDEO_CAPTURE == 0 {
        missing.push("video capture");
    }
    if caps & V4L2_CAP_STREAMING == 0 {
        missing.push("streaming I/O");
    }
    if missing.is_empty() {
        return Ok(());
    }
    let hint = if caps & V4L2_CAP_VIDEO_CAPTURE_MPLANE != 0 {
        " (it is a multi-planar capture device, as the Pi's own camera ports are: use the rpicam source for a Pi camera)"
    } else if caps & V4L2_CAP_VIDEO_CAPTURE == 0 {
        " (a webcam has several /dev/video nodes, some for metadata only: `v4l2-ctl --list-devices` shows which captures)"
    } else {
        ""
    };
    bail!(
        "{} ({}) lacks {}{hint}",
        device.display(),
        c_string(&cap.card),
        missing.join(" and ")
    )
}

/// Sets MJPEG (or, if the driver refuses it, JPEG) at about `width` x `height`; returns what the
/// driver chose.
fn set_format(fd: BorrowedFd<'_>, device: &Path, width: u32, height: u32) -> Result<PixFormat> {
    let mut offered = None;
    for want in [V4L2_PIX_FMT_MJPEG, V4L2_PIX_FMT_JPEG] {
        let mut f = Format::capture(width, height, want);
        match xioctl(fd, VIDIOC_S_FMT, &mut f) {
            Ok(()) if f.fmt.pix.pixelformat == want => return Ok(f.fmt.pix),
            Ok(()) => offered = Some(f.fmt.pix.pixelformat),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => bail!(
                "{} is busy: another program is streaming from the webcam ({e})",
                device.display()
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("setting the format of {}", device.display()))
            }
        }
    }
    let offered = offered.map_or_else(|| "nothing".to_owned(), fourcc_str);
    bail!(
        "{d} has no MJPEG (or JPEG) format (the driver offered {offered}); list what it sends with `v4l2-ctl -d {d} --list-formats-ext`",
        d = device.display()
    )
}

/// The buffers of one still's stream; dropping it streams off, unmaps and frees them.
struct Stream<'a> {
    fd: BorrowedFd<'a>,
    device: &'a Path,
    maps: Vec<Mapping>,
    requested: bool,
    streaming: bool,
}

impl<'a> Stream<'a> {
    /// Requests `count` mmap buffers, maps and queues them all, and streams on.
    fn start(fd: BorrowedFd<'a>, count: u32, device: &'a Path) -> Result<Stream<'a>> {
        let d = device.display();
        let mut req = RequestBuffers::mmap(count);
        xioctl(fd, VIDIOC_REQBUFS, &mut req).map_err(|e| {
            if e.raw_os_error() == Some(libc::EINVAL) {
                anyhow::anyhow!("{d} does not support mmap streaming ({e})")
            } else if e.raw_os_error() == Some(libc::EBUSY) {
                anyhow::anyhow!("{d} is busy: another program is streaming from the webcam ({e})")
            } else {
                anyhow::Error::new(e).context(format!("requesting buffers from {d}"))
            }
        })?;
        // From here on, dropping `stream` undoes whatever has been done.
        let mut stream = Stream {
            fd,
            device,
            maps: Vec::new(),
            requested: true,
            streaming: false,
        };
        if req.count == 0 {
            bail!("{d} gave no capture buffers (out of memory?)");
        }
        let n = req.count.min(MAX_BUFFERS);
        for index in 0..n {
            let mut b = Buffer::mmap(index);
            xioctl(fd, VIDIOC_QUERYBUF, &mut b)
                .with_context(|| format!("querying buffer {index} of {d}"))?;
            let map = Mapping::new(fd, b.length, b.m.offset)
                .with_context(|| format!("mapping buffer {index} of {d}"))?;
            stream.maps.push(map);
        }
        for index in 0..n {
            stream.requeue(index)?;
        }
        let mut ty = V4L2_BUF_TYPE_VIDEO_CAPTURE as c_int;
        xioctl(fd, VIDIOC_STREAMON, &mut ty).with_context(|| format!("starting {d} streaming"))?;
        stream.streaming = true;
        Ok(stream)
    }

    /// Hands buffer `index` (back) to the driver.
    fn requeue(&mut self, index: u32) -> Result<()> {
        let mut b = Buffer::mmap(index);
        xioctl(self.fd, VIDIOC_QBUF, &mut b)
            .with_context(|| format!("queueing buffer {index} of {}", self.device.display()))
    }

    /// The next filled buffer, waiting at most `timeout` for it.
    fn dequeue(&mut self, timeout: Duration) -> Result<Buffer> {
        let d = self.device.display();
        let deadline = Instant::now() + timeout;
        for _ in 0..MAX_WAKEUPS {
            let mut b = Buffer::mmap(0);
            match xioctl(self.fd, VIDIOC_DQBUF, &mut b) {
                Ok(()) => {
                    if b.index as usize >= self.maps.len() {
                        bail!("{d} returned buffer {} of {}", b.index, self.maps.len());
                    }
                    return Ok(b);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                    bail!("{d} went away (webcam unplugged?) ({e})")
                }
                Err(e) => return Err(e).with_context(|| format!("taking a frame from {d}")),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            wait_readable(self.fd, left).with_context(|| format!("waiting for {d}"))?;
        }
        bail!("{d} sent no frame within {timeout:?} (is the webcam still connected?)")
    }

    /// The `bytesused` bytes of a dequeued buffer.
    fn copy_out(&self, b: &Buffer) -> Vec<u8> {
        self.maps[b.index as usize].copy_out(b.bytesused as usize)
    }
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        if self.streaming {
            let mut ty = V4L2_BUF_TYPE_VIDEO_CAPTURE as c_int;
            if let Err(e) = xioctl(self.fd, VIDIOC_STREAMOFF, &mut ty) {
                tracing::debug!(device = %self.device.display(), "VIDIOC_STREAMOFF: {e}");
            }
        }
        // Buffers still mapped cannot be freed: unmap first.
        self.maps.clear();
        if self.requested {
            let mut req = RequestBuffers::mmap(0);
            if let Err(e) = xioctl(self.fd, VIDIOC_REQBUFS, &mut req) {
                tracing::debug!(device = %self.device.display(), "VIDIOC_REQBUFS 0: {e}");
            }
        }
    }
}

/// One driver buffer mapped into memory (read-only); unmapped on drop.
struct Mapping {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes at `offset`, both exactly as VIDIOC_QUERYBUF gave them (the offset is a
    /// cookie the driver aligned to its page size, which is 16 KiB on a Pi 5: nothing here
    /// assumes one).
    fn new(fd: BorrowedFd<'_>, len: u32, offset: u32) -> io::Result<Mapping> {
        let len = len as usize;
        if len == 0 {
            return Err(io::Error::other("the driver gave a zero-length buffer"));
        }
        // off_t is 32 bits wide on some 32-bit targets, where the conversion can fail.
        #[allow(clippy::unnecessary_fallible_conversions)]
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::other(format!("buffer offset {offset:#x} out of range")))?;
        // SAFETY: asks the kernel for a new shared read-only mapping at an address of its
        // choosing (null hint), so no existing memory is touched; fd is an open V4L2 device and
        // len/offset are the ones its driver gave for this buffer.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }

    /// A copy of the first `n` bytes (at most the whole buffer). Called only for a buffer that
    /// is dequeued, i.e. that the driver is not writing.
    fn copy_out(&self, n: usize) -> Vec<u8> {
        let n = n.min(self.len);
        // SAFETY: the mapping is live (it is unmapped only on drop), readable and at least
        // `self.len >= n` bytes long; the buffer is dequeued, so the device does not write it
        // while it is read, and the slice does not outlive this call.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), n) }.to_vec()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region `Mapping::new` mapped, once; no slice into it
        // outlives `copy_out`.
        let r = unsafe { libc::munmap(self.ptr.as_ptr(), self.len) };
        if r != 0 {
            tracing::debug!("munmap: {}", io::Error::last_os_error());
        }
    }
}

/// Waits (at most `left`) for `fd` to have a frame; returns early on a signal.
fn wait_readable(fd: BorrowedFd<'_>, left: Duration) -> io::Result<()> {
    let ms = c_int::try_from(left.as_millis().max(1)).unwrap_or(c_int::MAX);
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid, exclusively borrowed pollfd and a count of 1.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

// ---- The kernel interface (include/uapi/linux/videodev2.h) ----

/// Argument types of the ioctls used here: `#[repr(C)]` and made only of integers (no
/// pointers, no enums, no bools), so whatever bytes the kernel writes into one are a valid value.
trait IoctlArg {}
impl IoctlArg for Capability {}
impl IoctlArg for Format {}
impl IoctlArg for RequestBuffers {}
impl IoctlArg for Buffer {}
impl IoctlArg for c_int {}

/// `ioctl(fd, request, arg)`, retried when a signal interrupts it.
fn xioctl<T: IoctlArg>(fd: BorrowedFd<'_>, request: u32, arg: &mut T) -> io::Result<()> {
    // The size the request number encodes is the size the kernel copies in and out.
    assert_eq!(
        ioc_size(request),
        std::mem::size_of::<T>(),
        "ioctl {request:#x} argument size"
    );
    for _ in 0..EINTR_RETRIES {
        // SAFETY: `arg` is an exclusive borrow of a live value exactly as large as the request
        // says (asserted above), so the kernel reads and writes only inside it; IoctlArg types
        // are plain integers, so any bytes it writes leave a valid value. (`as _`: the request
        // parameter is an unsigned long on glibc and an int on musl; the kernel takes the same
        // 32 bits either way.)
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, std::ptr::from_mut(arg)) };
        if r != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Err(io::Error::from(io::ErrorKind::Interrupted))
}

// The generic ioctl number encoding (include/uapi/asm-generic/ioctl.h), which x86-64, arm64,
// arm and riscv use: nr in bits 0-7, type in 8-15, size in 16-29, direction in 30-31.
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_SIZEBITS: u32 = 14;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    assert!(size < 1 << IOC_SIZEBITS);
    (dir << IOC_DIRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
}
const fn ior<T>(nr: u8) -> u32 {
    ioc(IOC_READ, b'V', nr, std::mem::size_of::<T>())
}
const fn iow<T>(nr: u8) -> u32 {
    ioc(IOC_WRITE, b'V', nr, std::mem::size_of::<T>())
}
const fn iowr<T>(nr: u8) -> u32 {
    ioc(IOC_READ | IOC_WRITE, b'V', nr, std::mem::size_of::<T>())
}
const fn ioc_size(request: u32) -> usize {
    ((request >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)) as usize
}

const VIDIOC_QUERYCAP: u32 = ior::<Capability>(0);
const VIDIOC_S_FMT: u32 = iowr::<Format>(5);
const VIDIOC_REQBUFS: u32 = iowr::<RequestBuffers>(8);
const VIDIOC_QUERYBUF: u32 = iowr::<Buffer>(9);
const VIDIOC_QBUF: u32 = iowr::<Buffer>(15);
const VIDIOC_DQBUF: u32 = iowr::<Buffer>(17);
const VIDIOC_STREAMON: u32 = iow::<c_int>(18);
const VIDIOC_STREAMOFF: u32 = iow::<c_int>(19);

const V4L2_CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
const V4L2_CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
const V4L2_CAP_STREAMING: u32 = 0x0400_0000;
const V4L2_CAP_DEVICE_CAPS: u32 = 0x8000_0000;
const V4L2_BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
const V4L2_MEMORY_MMAP: u32 = 1;
const V4L2_FIELD_ANY: u32 = 0;
const V4L2_BUF_FLAG_ERROR: u32 = 0x0000_0040;

const fn fourcc(c: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*c)
}
const V4L2_PIX_FMT_MJPEG: u32 = fourcc(b"MJPG");
const V4L2_PIX_FMT_JPEG: u32 = fourcc(b"JPEG");

fn fourcc_str(f: u32) -> String {
    let b = f.to_le_bytes();
    if b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        format!("'{}'", String::from_utf8_lossy(&b))
    } else {
        format!("{f:#010x}")
    }
}

/// A NUL-terminated name from a fixed-size kernel field.
fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// struct v4l2_capability.
#[repr(C)]
#[allow(dead_code)] // the layout is the kernel's; not every field is read
struct Capability {
    driver: [u8; 16],
    card: [u8; 32],
    bus_info: [u8; 32],
    version: u32,
    capabilities: u32,
    device_caps: u32,
    reserved: [u32; 3],
}

impl Capability {
    const fn zeroed() -> Capability {
        Capability {
            driver: [0; 16],
            card: [0; 32],
            bus_info: [0; 32],
            version: 0,
            capabilities: 0,
            device_caps: 0,
            reserved: [0; 3],
        }
    }
}

/// struct v4l2_pix_format (the anonymous ycbcr_enc/hsv_enc union is one u32).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(dead_code)]
struct PixFormat {
    width: u32,
    height: u32,
    pixelformat: u32,
    field: u32,
    bytesperline: u32,
    sizeimage: u32,
    colorspace: u32,
    priv_: u32,
    flags: u32,
    ycbcr_enc: u32,
    quantization: u32,
    xfer_func: u32,
}

/// The 200-byte `fmt` union of struct v4l2_format, as its `pix` member plus the rest. Some
/// members (struct v4l2_window) hold pointers, so the union is pointer-aligned: `_align` gives
/// it that alignment without a Rust union.
#[repr(C)]
#[allow(dead_code)]
struct FormatUnion {
    _align: [c_ulong; 0],
    pix: PixFormat,
    rest: [u8; 200 - std::mem::size_of::<PixFormat>()],
}

/// struct v4l2_format.
#[repr(C)]
#[allow(dead_code)]
struct Format {
    type_: u32,
    fmt: FormatUnion,
}

impl Format {
    fn capture(width: u32, height: u32, pixelformat: u32) -> Format {
        Format {
            type_: V4L2_BUF_TYPE_VIDEO_CAPTURE,
            fmt: FormatUnion {
                _align: [],
                pix: PixFormat {
                    width,
                    height,
                    pixelformat,
                    field: V4L2_FIELD_ANY,
                    ..PixFormat::default()
                },
                rest: [0; 200 - std::mem::size_of::<PixFormat>()],
            },
        }
    }
}

/// struct v4l2_requestbuffers.
#[repr(C)]
#[allow(dead_code)]
struct RequestBuffers {
    count: u32,
    type_: u32,
    memory: u32,
    capabilities: u32,
    flags: u8,
    reserved: [u8; 3],
}

impl RequestBuffers {
    fn mmap(count: u32) -> RequestBuffers {
        RequestBuffers {
            count,
            type_: V4L2_BUF_TYPE_VIDEO_CAPTURE,
            memory: V4L2_MEMORY_MMAP,
            capabilities: 0,
            flags: 0,
            reserved: [0; 3],
        }
    }
}

/// struct timeval as the kernel lays it out in struct v4l2_buffer on 64-bit Linux (two longs).
#[repr(C)]
#[allow(dead_code)]
struct Timeval {
    tv_sec: c_long,
    tv_usec: c_long,
}

/// struct v4l2_timecode.
#[repr(C)]
#[allow(dead_code)]
struct Timecode {
    type_: u32,
    flags: u32,
    frames: u8,
    seconds: u8,
    minutes: u8,
    hours: u8,
    userbits: [u8; 4],
}

/// The `m` union of struct v4l2_buffer: `offset` (a u32 at its start, whatever the byte
/// order), padded and aligned as its largest member, `unsigned long userptr`.
#[repr(C)]
#[allow(dead_code)]
struct BufferM {
    _align: [c_ulong; 0],
    offset: u32,
    rest: [u8; std::mem::size_of::<c_ulong>() - 4],
}

/// struct v4l2_buffer (the trailing request_fd/reserved union is one u32).
#[repr(C)]
#[allow(dead_code)]
struct Buffer {
    index: u32,
    type_: u32,
    bytesused: u32,
    flags: u32,
    field: u32,
    timestamp: Timeval,
    timecode: Timecode,
    sequence: u32,
    memory: u32,
    m: BufferM,
    length: u32,
    reserved2: u32,
    request_fd: u32,
}

impl Buffer {
    fn mmap(index: u32) -> Buffer {
        Buffer {
            index,
            type_: V4L2_BUF_TYPE_VIDEO_CAPTURE,
            bytesused: 0,
            flags: 0,
            field: 0,
            timestamp: Timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            timecode: Timecode {
                type_: 0,
                flags: 0,
                frames: 0,
                seconds: 0,
                minutes: 0,
                hours: 0,
                userbits: [0; 4],
            },
            sequence: 0,
            memory: V4L2_MEMORY_MMAP,
            m: BufferM {
                _align: [],
                offset: 0,
                rest: [0; std::mem::size_of::<c_ulong>() - 4],
            },
            length: 0,
            reserved2: 0,
            request_fd: 0,
        }
    }
}

// ---- MJPEG to JPEG ----

const MARKER_SOI: u8 = 0xD8;
const MARKER_EOI: u8 = 0xD9;
const MARKER_SOS: u8 = 0xDA;
const MARKER_DHT: u8 = 0xC4;

/// The standard Huffman tables of ITU-T T.81 Annex K.3 (K.3.3.1 DC, K.3.3.2 AC), as table
/// classes/ids with 16 code-length counts and their values: the tables an MJPEG decoder
/// assumes when a frame has none.
const DC_LUMINANCE_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_CHROMINANCE_BITS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_LUMINANCE_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
#[rustfmt::skip]
const AC_LUMINANCE_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const AC_CHROMINANCE_BITS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
#[rustfmt::skip]
const AC_CHROMINANCE_VALUES: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

/// Bytes of the DHT segment holding the four standard tables: marker, length, then per table
/// its class/id byte, 16 counts and its values.
const DHT_LEN: usize = 4 + 4 * (1 + 16) + 2 * 12 + 2 * 162;
/// The whole DHT segment inserted into frames that have none.
const DEFAULT_DHT: [u8; DHT_LEN] = default_dht();

const fn default_dht() -> [u8; DHT_LEN] {
    let mut out = [0u8; DHT_LEN];
    let seg_len = DHT_LEN - 2; // the length field counts itself, not the marker
    out[0] = 0xFF;
    out[1] = MARKER_DHT;
    out[2] = (seg_len >> 8) as u8;
    out[3] = seg_len as u8;
    let tables: [(u8, &[u8; 16], &[u8]); 4] = [
        (0x00, &DC_LUMINANCE_BITS, &DC_VALUES),
        (0x01, &DC_CHROMINANCE_BITS, &DC_VALUES),
        (0x10, &AC_LUMINANCE_BITS, &AC_LUMINANCE_VALUES),
        (0x11, &AC_CHROMINANCE_BITS, &AC_CHROMINANCE_VALUES),
    ];
    let mut at = 4;
    let mut t = 0;
    while t < tables.len() {
        let (class_id, bits, values) = tables[t];
        out[at] = class_id;
        at += 1;
        let mut i = 0;
        while i < 16 {
            out[at] = bits[i];
            at += 1;
            i += 1;
        }
        let mut i = 0;
        while i < values.len() {
            out[at] = values[i];
            at += 1;
            i += 1;
        }
        t += 1;
    }
    assert!(at == DHT_LEN);
    out
}

/// Makes a webcam's MJPEG frame a JPEG any decoder opens: checks it is a JPEG (SOI, well-formed
/// marker segments up to SOS, an EOI after the scan), inserts the standard Huffman tables
/// (`DEFAULT_DHT`) right before SOS if the frame has no DHT segment, and drops whatever follows
/// EOI (drivers may pad the buffer). A frame that needs no tables comes back borrowed.
fn mjpeg_to_jpeg(frame: &[u8]) -> Result<Cow<'_, [u8]>> {
    if frame.len() < 2 || frame[0] != 0xFF || frame[1] != MARKER_SOI {
        let head = &frame[..frame.len().min(4)];
        bail!("not a JPEG: no start-of-image marker (the data starts {head:02x?})");
    }
    let len = frame.len();
    let mut pos = 2;
    let mut has_dht = false;
    // Walks the header segments. Bounded: every pass moves `pos` forward by at least two bytes
    // or fails, and `pos` never passes `len`.
    let (sos_at, scan_at) = loop {
        if pos >= len {
            bail!("truncated JPEG: no start-of-scan marker");
        }
        if frame[pos] != 0xFF {
            bail!(
                "not a JPEG: expected a marker at byte {pos}, found {:#04x}",
                frame[pos]
            );
        }
        // A marker may be preceded by any number of 0xFF fill bytes.
        let mut m = pos + 1;
        while m < len && frame[m] == 0xFF {
            m += 1;
        }
        if m >= len {
            bail!("truncated JPEG: ends inside a marker at byte {pos}");
        }
        let marker = frame[m];
        match marker {
            0x01 | 0xD0..=0xD7 => {
                // TEM and RSTn stand alone, without a length.
                pos = m + 1;
                continue;
            }
            MARKER_EOI => bail!("JPEG without an image: end-of-image before start-of-scan"),
            0x00 | MARKER_SOI => {
                bail!("not a JPEG: unexpected marker 0xff{marker:02x} at byte {pos}")
            }
            _ => {}
        }
        if m + 3 > len {
            bail!("truncated JPEG: the 0xff{marker:02x} segment at byte {pos} has no length");
        }
        let seg_len = usize::from(u16::from_be_bytes([frame[m + 1], frame[m + 2]]));
        if seg_len < 2 {
            bail!("not a JPEG: the 0xff{marker:02x} segment at byte {pos} has length {seg_len}");
        }
        let end = m + 1 + seg_len;
        if end > len {
            bail!(
                "truncated JPEG: the 0xff{marker:02x} segment at byte {pos} runs past the end ({end} > {len})"
            );
        }
        if marker == MARKER_SOS {
            break (pos, end);
        }
        has_dht |= marker == MARKER_DHT;
        pos = end;
    };
    // In entropy-coded data a 0xFF byte is always followed by 0x00 (stuffing) or a RSTn marker,
    // so the first 0xFF 0xD9 after the scan header is the end of the image.
    let eoi_end = frame[scan_at..]
        .windows(2)
        .position(|w| w == [0xFF, MARKER_EOI])
        .map(|i| scan_at + i + 2)
        .context("truncated JPEG: no end-of-image marker after the scan")?;
    let frame = &frame[..eoi_end];
    if has_dht {
        return Ok(Cow::Borrowed(frame));
    }
    let mut out = Vec::with_capacity(frame.len() + DEFAULT_DHT.len());
    out.extend_from_slice(&frame[..sos_at]);
    out.extend_from_slice(&DEFAULT_DHT);
    out.extend_from_slice(&frame[sos_at..]);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The sizes of `include/uapi/linux/videodev2.h` on 64-bit Linux (x86-64, arm64), which the
    /// ioctl numbers encode.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn structs_have_the_kernels_layout() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(size_of::<Capability>(), 104);
        assert_eq!(size_of::<PixFormat>(), 48);
        assert_eq!(size_of::<Format>(), 208);
        assert_eq!(offset_of!(Format, fmt), 8);
        assert_eq!(size_of::<RequestBuffers>(), 20);
        assert_eq!(size_of::<Buffer>(), 88);
        assert_eq!(align_of::<Buffer>(), 8);
        assert_eq!(offset_of!(Buffer, timestamp), 24);
        assert_eq!(offset_of!(Buffer, timecode), 40);
        assert_eq!(offset_of!(Buffer, sequence), 56);
        assert_eq!(offset_of!(Buffer, memory), 60);
        assert_eq!(offset_of!(Buffer, m), 64);
        assert_eq!(offset_of!(Buffer, length), 72);
        assert_eq!(offset_of!(Buffer, request_fd), 80);
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(VIDIOC_QUERYCAP, 0x8068_5600);
        assert_eq!(VIDIOC_S_FMT, 0xc0d0_5605);
        assert_eq!(VIDIOC_REQBUFS, 0xc014_5608);
        assert_eq!(VIDIOC_QUERYBUF, 0xc058_5609);
        assert_eq!(VIDIOC_QBUF, 0xc058_560f);
        assert_eq!(VIDIOC_DQBUF, 0xc058_5611);
        assert_eq!(VIDIOC_STREAMON, 0x4004_5612);
        assert_eq!(VIDIOC_STREAMOFF, 0x4004_5613);
        assert_eq!(ioc_size(VIDIOC_DQBUF), 88);
        assert_eq!(V4L2_PIX_FMT_MJPEG, 0x4750_4a4d);
        assert_eq!(V4L2_PIX_FMT_JPEG, 0x4745_504a);
        assert_eq!(fourcc_str(V4L2_PIX_FMT_MJPEG), "'MJPG'");
        assert_eq!(fourcc_str(0x0000_0001), "0x00000001");
    }

    #[test]
    fn options_default_to_a_full_hd_webcam_at_video0() {
        let o = V4l2Options::default();
        assert_eq!(o.device, Path::new("/dev/video0"));
        assert_eq!((o.width, o.height), (1920, 1080));
        assert_eq!(o.warmup_frames, 5);
        assert_eq!(o.timeout, Duration::from_secs(10));
        assert_eq!(o.buffers, 4);
    }

    /// This machine has no V4L2 device; what can be checked without one: the errors.
    #[test]
    fn open_errors_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("video7");
        let e = V4l2Source::open(&V4l2Options {
            device: missing.clone(),
            ..V4l2Options::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("no such device"), "{e}");
        assert!(e.contains(&missing.display().to_string()), "{e}");
        assert!(e.contains("v4l2-ctl --list-devices"), "{e}");

        let e = V4l2Source::open(&V4l2Options {
            device: "/dev/null".into(),
            ..V4l2Options::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("/dev/null is not a V4L2 device"), "{e}");

        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"not a camera").unwrap();
        let e = V4l2Source::open(&V4l2Options {
            device: plain,
            ..V4l2Options::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("is not a V4L2 device"), "{e}");

        let e = open_error(
            Path::new("/dev/video0"),
            io::Error::from_raw_os_error(libc::EACCES),
        )
        .to_string();
        assert!(e.contains("permission denied opening /dev/video0"), "{e}");
        assert!(e.contains("`video` group"), "{e}");

        for bad in [
            V4l2Options {
                buffers: 0,
                ..V4l2Options::default()
            },
            V4l2Options {
                width: 0,
                ..V4l2Options::default()
            },
        ] {
            let e = V4l2Source::open(&V4l2Options {
                device: "/dev/null".into(),
                ..bad
            })
            .unwrap_err()
            .to_string();
            assert!(!e.contains("V4L2 device"), "options are checked first: {e}");
        }
    }

    #[test]
    fn capabilities_need_capture_and_streaming_on_the_node() {
        let mut cap = Capability::zeroed();
        cap.card[..6].copy_from_slice(b"Webcam");
        cap.capabilities = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING;
        let dev = Path::new("/dev/video0");
        check_caps(&cap, dev).unwrap();

        // With DEVICE_CAPS, the node's own capabilities count: a webcam's metadata node.
        cap.capabilities |= V4L2_CAP_DEVICE_CAPS;
        cap.device_caps = V4L2_CAP_STREAMING;
        let e = check_caps(&cap, Path::new("/dev/video1"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/dev/video1 (Webcam) lacks video capture"),
            "{e}"
        );
        assert!(e.contains("metadata"), "{e}");
        cap.device_caps = V4L2_CAP_VIDEO_CAPTURE | V4L2_CAP_STREAMING;
        check_caps(&cap, dev).unwrap();

        cap.device_caps = V4L2_CAP_VIDEO_CAPTURE_MPLANE | V4L2_CAP_STREAMING;
        let e = check_caps(&cap, dev).unwrap_err().to_string();
        assert!(e.contains("rpicam"), "{e}");

        cap.device_caps = V4L2_CAP_VIDEO_CAPTURE;
        let e = check_caps(&cap, dev).unwrap_err().to_string();
        assert!(e.contains("lacks streaming I/O"), "{e}");
        cap.device_caps = 0;
        let e = check_caps(&cap, dev).unwrap_err().to_string();
        assert!(e.contains("lacks video capture and streaming I/O"), "{e}");
    }

    #[test]
    fn the_default_tables_are_t81_annex_k3() {
        let count = |b: &[u8; 16]| b.iter().map(|&n| usize::from(n)).sum::<usize>();
        assert_eq!(count(&DC_LUMINANCE_BITS), DC_VALUES.len());
        assert_eq!(count(&DC_CHROMINANCE_BITS), DC_VALUES.len());
        assert_eq!(count(&AC_LUMINANCE_BITS), AC_LUMINANCE_VALUES.len());
        assert_eq!(count(&AC_CHROMINANCE_BITS), AC_CHROMINANCE_VALUES.len());
        // The well-known segment: FF C4, length 0x01A2 (418), tables 0x00, 0x01, 0x10, 0x11.
        assert_eq!(DEFAULT_DHT.len(), 420);
        assert_eq!(&DEFAULT_DHT[..6], &[0xFF, 0xC4, 0x01, 0xA2, 0x00, 0x00]);
        assert_eq!(DEFAULT_DHT[4 + 29], 0x01);
        assert_eq!(DEFAULT_DHT[4 + 2 * 29], 0x10);
        assert_eq!(DEFAULT_DHT[4 + 2 * 29 + 179], 0x11);
        assert_eq!(
            &DEFAULT_DHT[4 + 2 * 29 + 17..][..4],
            &[0x01, 0x02, 0x03, 0x00]
        );
        assert_eq!(&DEFAULT_DHT[DHT_LEN - 3..], &[0xf8, 0xf9, 0xfa]);
    }

    fn segment(marker: u8, body: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(&u16::try_from(body.len() + 2).unwrap().to_be_bytes());
        s.extend_from_slice(body);
        s
    }

    /// A small baseline frame shaped like a webcam's MJPEG one: SOI, APP0 "AVI1", DQT, SOF0,
    /// SOS, entropy-coded bytes (with stuffing and a restart marker), EOI. Returns it and where
    /// its SOS starts.
    fn webcam_frame(with_dht: bool) -> (Vec<u8>, usize) {
        let mut f = vec![0xFF, 0xD8];
        f.extend(segment(0xE0, b"AVI1\0\0"));
        let mut dqt = vec![0x00];
        dqt.extend((1..=64).map(|i: u8| i));
        f.extend(segment(0xDB, &dqt));
        f.extend(segment(
            0xC0,
            &[8, 0, 16, 0, 16, 3, 1, 0x21, 0, 2, 0x11, 1, 3, 0x11, 1],
        ));
        if with_dht {
            f.extend_from_slice(&DEFAULT_DHT);
        }
        let sos = f.len();
        f.extend(segment(0xDA, &[3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 0x3F, 0]));
        f.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xD9, 0x78]);
        f.extend_from_slice(&[0xFF, 0xD9]);
        (f, sos)
    }

    #[test]
    fn a_frame_without_tables_gets_the_standard_ones_before_sos() {
        let (frame, sos) = webcam_frame(false);
        let out = mjpeg_to_jpeg(&frame).unwrap();
        assert!(matches!(out, Cow::Owned(_)));
        let mut want = frame[..sos].to_vec();
        want.extend_from_slice(&DEFAULT_DHT);
        want.extend_from_slice(&frame[sos..]);
        assert_eq!(&*out, &want[..]);
        // Exactly one DHT now, and the result passes again unchanged.
        let again = mjpeg_to_jpeg(&out).unwrap();
        assert!(matches!(again, Cow::Borrowed(_)));
        assert_eq!(&*again, &*out);

        // Driver padding after EOI is dropped.
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0; 100]);
        assert_eq!(&*mjpeg_to_jpeg(&padded).unwrap(), &want[..]);
    }

    #[test]
    fn a_frame_with_tables_comes_back_borrowed_and_trimmed() {
        let (frame, _) = webcam_frame(true);
        let out = mjpeg_to_jpeg(&frame).unwrap();
        assert!(matches!(out, Cow::Borrowed(b) if std::ptr::eq(b, &frame[..])));
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0, 0, 0xFF, 0xD9, 0, 0]);
        let out = mjpeg_to_jpeg(&padded).unwrap();
        assert!(matches!(out, Cow::Borrowed(b) if b == &frame[..]));
    }

    #[test]
    fn what_is_not_a_whole_jpeg_is_an_error() {
        let (frame, sos) = webcam_frame(false);
        let err = |b: &[u8]| mjpeg_to_jpeg(b).unwrap_err().to_string();
        assert!(err(&[]).contains("no start-of-image"));
        assert!(err(&[0xFF]).contains("no start-of-image"));
        assert!(err(b"GIF89a").contains("no start-of-image"));
        assert!(err(&[0xFF, 0xD8]).contains("no start-of-scan"));
        assert!(err(&[0xFF, 0xD8, 0xFF, 0xD9]).contains("before start-of-scan"));
        assert!(err(&[0xFF, 0xD8, 0x00]).contains("expected a marker"));
        assert!(err(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01]).contains("has length 1"));
        assert!(err(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00]).contains("has no length"));
        assert!(err(&[0xFF, 0xD8, 0xFF, 0xFF]).contains("inside a marker"));
        // Cut inside a header segment, inside the SOS header, and before EOI.
        assert!(err(&frame[..10]).contains("runs past the end"));
        assert!(err(&frame[..sos + 5]).contains("runs past the end"));
        assert!(err(&frame[..frame.len() - 1]).contains("no end-of-image"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = mjpeg_to_jpeg(&bytes);
            let mut jpegish = vec![0xFF, 0xD8];
            jpegish.extend_from_slice(&bytes);
            if let Ok(out) = mjpeg_to_jpeg(&jpegish) {
                prop_assert_eq!(&out[..2], &[0xFF, 0xD8]);
                prop_assert_eq!(&out[out.len() - 2..], &[0xFF, 0xD9]);
            }
        }

        #[test]
        fn cutting_a_frame_anywhere_never_panics(cut in 0usize..700, with_dht in any::<bool>()) {
            let (frame, _) = webcam_frame(with_dht);
            let cut = cut.min(frame.len());
            let r = mjpeg_to_jpeg(&frame[..cut]);
            prop_assert_eq!(r.is_ok(), cut == frame.len());
        }
    }
}
