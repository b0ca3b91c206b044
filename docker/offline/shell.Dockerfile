# Local stand-in for a small image with /bin/sh (the worker's runtime), made
# by docker/images.sh from Debian's busybox-static when no registry is
# reachable. Tagged roundhouse/shell, never as an official image.
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp /etc /home/worker && chmod 1777 /tmp && \
    echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd && \
    echo 'worker:x:65532:65532:worker:/home/worker:/bin/sh' >> /etc/passwd && \
    printf 'root:x:0:\nworker:x:65532:\n' > /etc/group && \
    chown 65532:65532 /home/worker
