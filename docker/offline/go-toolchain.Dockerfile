# Local stand-in for the golang image, made by docker/images.sh from the
# host's Go installation and Debian's busybox-static when no registry is
# reachable. Tagged roundhouse/go-toolchain, never as an official image.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /root /go && chmod 1777 /tmp
COPY go /usr/local/go
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/go/bin:/go/bin:/bin GOPATH=/go HOME=/root GOTOOLCHAIN=local
