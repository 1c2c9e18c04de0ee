import java.nio.charset.StandardCharsets;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.barriers.DistributedDoubleBarrier;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.ExponentialBackoffRetry;
import org.apache.zookeeper.data.Stat;

/**
 * One contender for a Curator InterProcessMutex and a LeaderLatch; the test runs two.
 *
 * <p>Usage: CuratorContender CONNECT SESSION_MS ID ROUNDS BASE
 *
 * <p>Phase 1, ROUNDS times: take the mutex BASE/lock; check that BASE/check reads "free", write
 * ID there, add one to the counter in BASE/counter, read the check back (still ID), write "free"
 * again; release. Another holder at the same time would show as a check that is not "free" or
 * not ID, or as a lost counter update. Prints "ID overlap ..." if it sees one, "ID done ROUNDS"
 * at the end.
 *
 * <p>Phase 2, once both contenders are done with phase 1 (a DistributedDoubleBarrier on
 * BASE/phase2: the leader keeps the mutex, which the other may still need): join the
 * LeaderLatch BASE/leader; print "ID joined", then, once leader, take the mutex, print
 * "ID leader" and hold both until killed.
 */
public final class CuratorContender {
    private CuratorContender() {}

    private static byte[] bytes(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    private static String text(byte[] data) {
        return data == null ? "" : new String(data, StandardCharsets.UTF_8);
    }

    private static void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        String connect = args[0];
        int sessionMs = Integer.parseInt(args[1]);
        String id = args[2];
        int rounds = Integer.parseInt(args[3]);
        String base = args[4];
        CuratorFramework client =
                CuratorFrameworkFactory.builder()
                        .connectString(connect)
                        .sessionTimeoutMs(sessionMs)
                        .connectionTimeoutMs(15000)
                        .retryPolicy(new ExponentialBackoffRetry(100, 10))
                        .build();
        client.start();
        if (!client.blockUntilConnected(30, TimeUnit.SECONDS)) {
            say(id + " error not connected");
            System.exit(2);
        }
        InterProcessMutex mutex = new InterProcessMutex(client, base + "/lock");
        String check = base + "/check";
        String counter = base + "/counter";
        for (int round = 0; round < rounds; round++) {
            mutex.acquire();
            try {
                String before = text(client.getData().forPath(check));
                if (!before.equals("free")) {
                    say(id + " overlap " + round + " found " + before);
                }
                client.setData().forPath(check, bytes(id));
                Stat stat = new Stat();
                int count = Integer.parseInt(text(client.getData().storingStatIn(stat).forPath(counter)));
                client.setData().forPath(counter, bytes(Integer.toString(count + 1)));
                String after = text(client.getData().forPath(check));
                if (!after.equals(id)) {
                    say(id + " overlap " + round + " found " + after);
                }
                client.setData().forPath(check, bytes("free"));
            } finally {
                mutex.release();
            }
        }
        say(id + " done " + rounds);
        new DistributedDoubleBarrier(client, base + "/phase2", 2).enter();

        LeaderLatch latch = new LeaderLatch(client, base + "/leader", id);
        latch.start();
        say(id + " joined");
        latch.await();
        mutex.acquire();
        say(id + " leader " + latch.getLeader().getId());
        new CountDownLatch(1).await();
    }
}
